"""supervisord's configuration for the stack `fdl up` planned (:func:`fdl.stack.plan_stack`), and
the exec that replaces `fdl up` with supervisord (:mod:`fdl.supervise`) running it."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from fdl.stack import Stack
from fdl.supervise import STOP_SIGNALS

SUPERVISOR_CONF = "supervisord.conf"
# Start order (stop order is the reverse) and how long each child must run to count as started;
# a child that exits sooner is retried after 1 s, 2 s, 3 s ... and given up after
# FDL_START_RETRIES (10) retries.
# A Python child's time covers its imports (TensorFlow, FastAPI: 1-3 s on an idle machine, 6-9 s
# seen on a loaded one) with room to spare: a child that fails once its imports are done (a
# port it cannot bind) has then not yet counted as started, and reaches FATAL instead of
# being restarted forever.
CHILDREN = {"redis": (10, 1), "serving": (20, 30), "worker": (30, 30), "gateway": (40, 30)}
# Seconds a child may take to stop after SIGTERM, by its own deadlines (tests/deploy/
# test_stop_waits.py holds these to the constants they come from): the gateway closes its probe
# listener (SHUTDOWN_S, 3 s, api/probe.py), gives its requests in flight their grace
# (FDL_SHUTDOWN_GRACE_S, at most SHUTDOWN_GRACE_S, 10 s, api/settings.py), then shuts its app down
# (the cancelled requests' end, SETTLE_S, 3 s, api/shutdown.py, and its clients closed: 5 s in
# all); our model server stops within SHUTDOWN_DEADLINE_S (10 s, serving/__main__.py; TF Serving
# ends at once).
GATEWAY_SHUTDOWN_S = 3 + 10 + 5
SERVING_SHUTDOWN_S = 10
# Past its own deadline a child gets this long more (a loaded machine's slow exit) before SIGKILL.
STOP_MARGIN_S = 5
# The worker's run stops at its next batch and hands its job back (training/worker_stop.py), or,
# past its training, finishes it: an MNIST or CIFAR-10 job's evaluation, export and publish on
# CPU take seconds to tens of seconds; one SIGKILLed meanwhile is left to the reaper, counted.
WORKER_STOP_WAIT_S = 30
# Seconds between SIGTERM and SIGKILL of a child's process group when the stack stops; Redis gets
# DEFAULT_STOP_WAIT_S.
DEFAULT_STOP_WAIT_S = 10
STOP_WAITS_S = {
    "serving": SERVING_SHUTDOWN_S + STOP_MARGIN_S,
    "gateway": GATEWAY_SHUTDOWN_S + STOP_MARGIN_S,
    "worker": WORKER_STOP_WAIT_S,
}
# The longest: what `fdl up` waits for the leftovers of a killed stack, stopped together
# (fdl/cli_up.py).
STOP_WAIT_S = max(DEFAULT_STOP_WAIT_S, *STOP_WAITS_S.values())


def supervisor_config(stack: Stack) -> str:
    """supervisord's configuration: every child restarted when it dies, its output on ours."""
    sections: dict[str, dict[str, object]] = {
        "supervisord": {
            "nodaemon": "true",
            "logfile": stack.var_dir / "supervisord.log",
            "logfile_maxbytes": "5MB",
            "logfile_backups": 1,
            "pidfile": stack.var_dir / "supervisord.pid",
            "loglevel": "info",
        }
    }
    if os.getuid() == 0:
        # Says so explicitly, instead of a warning at every start.
        sections["supervisord"]["user"] = "root"
    for name, argv in stack.commands.items():
        priority, start_s = CHILDREN.get(name, (50, 30))
        sections[f"program:{name}"] = {
            "command": shlex.join(argv),
            "priority": priority,
            "autorestart": "true",
            "startsecs": start_s,
            "startretries": stack.start_retries,
            "stopsignal": "TERM",
            "stopwaitsecs": STOP_WAITS_S.get(name, DEFAULT_STOP_WAIT_S),
            # Signals go to the child's whole process group (Celery's pool, the server's threads).
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",
            # supervisord expands this value twice (a literal % would be %%%%): keep it free of %.
            "stdout_logfile": "/dev/stdout",
            "stdout_logfile_maxbytes": 0,
        }
    # supervisord expands %(name)s in every value it reads (paths and commands included): a
    # literal % (a var folder under "100%done") is written %%.
    lines = []
    for section, values in sections.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key}={str(value).replace('%', '%%')}" for key, value in values.items()]
    return "\n".join(lines[1:]) + "\n"


def run_stack(stack: Stack) -> int:
    """Replace this process with supervisord running the stack (:mod:`fdl.supervise`; it returns
    only on error). The var folder's lock (fdl/cli_up.py) is held across the exec.

    The stop signals (Ctrl-C, SIGTERM, SIGHUP) are blocked from here on: one sent during the
    hand-over stays pending across the exec, and supervisord takes it as soon as its handlers are
    in (it then stops before starting any child). Unblocked, such a signal was lost (SIGINT
    inherited ignored, as by a script's `fdl up &`, until supervisord's handler is set, 0.4 s
    after the exec or more), or killed the new process half-way (default action, or a
    KeyboardInterrupt in supervisord's imports). One sent before the block raises
    KeyboardInterrupt here, at the next Python call below, and `fdl up` ends before the exec.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    # Children find our console scripts (fdl-gateway, fdl-worker) next to this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **stack.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    conf = stack.var_dir / SUPERVISOR_CONF
    conf.write_text(supervisor_config(stack))
    sys.stdout.flush()
    # -P: the folder `fdl up` runs in is not put first on the import path (a user's fdl.py there
    # would shadow our package).
    argv = [sys.executable, "-P", "-m", "fdl.supervise", "--nodaemon", "--configuration"]
    try:
        os.execve(sys.executable, [*argv, str(conf)], env)
    finally:  # reached only if the exec failed: the signals act on `fdl up` again
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return 1  # not reached: execve does not return
