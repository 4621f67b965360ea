"""supervisord running `fdl up`'s stack (``python -m fdl.supervise [supervisord's options]``, the
program :func:`fdl.stack_supervisor.run_stack` replaces ``fdl up`` with): supervisord's own loop,
run once, so that SIGHUP (the terminal closed) stops the stack as SIGTERM does instead of
restarting it. See docs/deploy.md, "fdl up".
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import termios
from types import FrameType

# Blocked by `fdl up` from just before its exec into this program (fdl.stack_supervisor.run_stack)
# until supervisord's handlers for them are in: one sent meanwhile waits, pending, for them.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def supervise(args: list[str]) -> int:
    """supervisord (``args``: its options) running the stack until SIGTERM, SIGINT or SIGHUP,
    then stopping every child; run once, never restarted.

    supervisord's own entry point (``python -m supervisor.supervisord``) takes SIGHUP as
    "restart": it stops every child and starts them all again. But SIGHUP is what a closed
    terminal sends, and the stack must not outlive its terminal; nor may supervisord die of an
    EIO writing to that terminal before it has stopped its children. So a SIGHUP first points
    what was written to the hung-up terminal at /dev/null, then stops the stack as SIGTERM does:
    supervisord's "restart" stops every child in order, and its loop is not run again.
    """
    from supervisor import supervisord
    from supervisor.options import ServerOptions
    from supervisor.states import SupervisorStates

    # Started under nohup (SIGHUP ignored since before the exec): it stays ignored, as a daemon's
    # would, and the stack outlives the terminal as the user asked.
    ignored = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN

    class Options(ServerOptions):  # type: ignore[misc]  # supervisor has no type information
        def setsignals(self) -> None:
            super().setsignals()
            receive = self.signal_receiver.receive

            def hang_up(sig: int, frame: FrameType | None) -> None:
                silence_hung_up_terminal()
                receive(sig, frame)

            signal.signal(signal.SIGHUP, signal.SIG_IGN if ignored else hang_up)
            # The handlers take what was sent during the hand-over (pthread_sigmask runs them
            # before it returns). supervisord would act on it only after its first round had
            # started every child, then stop them as they start (a child's handler set by then
            # may lose the SIGTERM, costing its whole stop wait): the stack stops now instead.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            sig = self.signal_receiver.get_signal()
            if sig in STOP_SIGNALS:
                name = signal.Signals(sig).name
                self.logger.warn(
                    f"received {name} as the stack started: stopping, no child started"
                )
                # SIGHUP as supervisord's own handling would take it (supervise() below).
                hup = sig == signal.SIGHUP
                self.mood = SupervisorStates.RESTARTING if hup else SupervisorStates.SHUTDOWN
            elif sig is not None:
                self.signal_receiver.receive(sig, None)  # left to supervisord's loop

    options = Options()
    options.realize(args, doc=supervisord.__doc__)
    options.first, options.test = True, False
    supervisord.go(options)  # returns once every child has stopped
    if options.mood == SupervisorStates.RESTARTING:
        options.logger.warn("SIGHUP: the stack has stopped (a closed terminal, or kill -HUP)")
    options.close_httpservers()
    options.close_logger()
    return 0


def silence_hung_up_terminal() -> None:
    """Point every descriptor of this process that is on a hung-up terminal (a write to it fails
    with EIO, as does the traceback supervisord would print of that failure) at /dev/null.
    Descriptors on a terminal that is still there, or on a file, are left as they are."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux
        fds = [0, 1, 2]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            if fd != null and hung_up(fd):
                with contextlib.suppress(OSError):  # closed meanwhile
                    os.dup2(null, fd, inheritable=os.get_inheritable(fd))
    finally:
        os.close(null)


def hung_up(fd: int) -> bool:
    """Whether ``fd`` is on a terminal that has been hung up (closed)."""
    try:
        termios.tcgetattr(fd)
    except termios.error as error:
        return bool(error.args[0] == errno.EIO)
    return False


if __name__ == "__main__":
    # What `fdl up` runs (fdl.stack_supervisor.run_stack):
    # python -m fdl.supervise [supervisord's options].
    sys.exit(supervise(sys.argv[1:]))
