"""What runs inside the service: ``cpsysd serve``.

One module per concern: :mod:`~cpsysd.runtime.adopt` (LISTEN_FDS -> validated sockets),
:mod:`~cpsysd.runtime.listeners` (sockets <-> described listeners, or binding them ourselves),
:mod:`~cpsysd.runtime.notify` (sd_notify), :mod:`~cpsysd.runtime.watchdog`,
:mod:`~cpsysd.runtime.journal` (logging), :mod:`~cpsysd.runtime.tls`, :mod:`~cpsysd.runtime.app`
(the entry point and its CherryPy config), :mod:`~cpsysd.runtime.server` (cheroot on a pre-bound
socket), :mod:`~cpsysd.runtime.plugins` (CherryPy bus plugins) and :mod:`~cpsysd.runtime.main`.

Nothing here imports the generator side (render, jinja2, typer, cryptography): this code starts
with every request to a socket-activated service and should start fast.
"""
