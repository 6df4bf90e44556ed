"""Process management: the only part of bastion that forks.

* :mod:`~bastion.process.supervisor` -- ``run(config)``: sockets, workers, signals, reload.
* :mod:`~bastion.process.worker` -- the body of a forked worker (one uvloop event loop).
* :mod:`~bastion.process.listeners` -- listening sockets from ``server.bind``.
* :mod:`~bastion.process.children` -- the supervisor's record of each worker.
* :mod:`~bastion.process.control` -- the pipe a worker reports ``ready``/``failed``/``recycle`` on.
* :mod:`~bastion.process.heartbeat` -- the shared table that shows a worker's loop is alive.
* :mod:`~bastion.process.signals` -- signals turned into a queue the main loop reads.
"""
