"""Process management: the only part of bastion that forks.

* :mod:`~bastion.process.supervisor` -- ``run(config)``: the main loop and the workers' life.
* :mod:`~bastion.process.worker` -- the body of a forked worker (one uvloop event loop).
* :mod:`~bastion.process.listeners` -- listening sockets from ``server.bind``.
* :mod:`~bastion.process.children` -- the supervisor's record of each worker.
* :mod:`~bastion.process.control` -- the pipe a worker reports ``ready``/``failed``/``recycle`` on.
* :mod:`~bastion.process.heartbeat` -- the shared table that shows a worker's loop is alive.
* :mod:`~bastion.process.startup` -- before the first fork: certificates, sockets, preload.
* :mod:`~bastion.process.signals` -- signals turned into a queue the main loop reads.
* :mod:`~bastion.process.signal_actions` -- what the supervisor does on each signal.
* :mod:`~bastion.process.managed` -- the ``[[process]]`` programs run beside the workers.
* :mod:`~bastion.process.memory_check` -- ``workers.max_memory`` and memory growth warnings.
* :mod:`~bastion.process.rolling_reload` -- SIGHUP: the configuration again, workers one by one.
* :mod:`~bastion.process.upgrade` -- SIGUSR2: a new bastion on the same sockets.
* :mod:`~bastion.process.watch` -- ``--reload``: the process that watches the code.
"""
