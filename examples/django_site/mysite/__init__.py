"""A minimal Django project served by bastion.

Run it from examples/django_site::

    bastion serve mysite.wsgi:application --wsgi-mode threads

or, from anywhere, ``bastion serve --app-dir examples/django_site mysite.wsgi:application``.
"""
