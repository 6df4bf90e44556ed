"""[[process]]: programs bastion runs beside its workers, restarts when they die, stops
in order, and whose output goes to its log."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

from proc_tools import child_pids, get, wait_until
from server import APPS, BastionProcess

CRASHER = """
import os, sys, time
print("crasher up in pid", os.getpid(), "with", os.environ.get("ROLE"), flush=True)
time.sleep(0.3)
print("crasher going down", file=sys.stderr, flush=True)
sys.exit(3)
"""

STEADY = """
import os, signal, sys, time
name = sys.argv[1]
def bye(signum, frame):
    print(name, "stopping on", signal.Signals(signum).name, flush=True)
    time.sleep(0.2)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
signal.signal(signal.SIGINT, bye)
print(name, "up in", os.getcwd(), flush=True)
while True:
    time.sleep(1)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn up", flush=True)
while True:
    time.sleep(1)
"""


def _config(tmp_path: Path, processes: str) -> Path:
    (tmp_path / "crasher.py").write_text(CRASHER)
    (tmp_path / "steady.py").write_text(STEADY)
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'[app]\ntarget = "proc_app:app"\napp_dir = "{APPS}"\n'
        '[server]\nbind = ["127.0.0.1:0"]\n[workers]\ncount = 1\n' + processes
    )
    return config


def test_a_crashing_process_is_restarted_with_backoff_and_its_output_logged(
    tmp_path: Path,
) -> None:
    py = sys.executable
    config = _config(
        tmp_path,
        f"""
[[process]]
name = "crasher"
command = ["{py}", "crasher.py"]
cwd = "{tmp_path}"
env = {{ ROLE = "beat" }}
backoff_min = 0.2
backoff_max = 5
""",
    )
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        assert get(srv.url)[0] == 200
        srv.wait_for_log(r"process crasher \(pid \d+\) exited with status 3", 10)
        wait_until(lambda: srv.log.count("process crasher: restarting in") >= 3, 15, "restarts")
        assert "[crasher] crasher up in pid" in srv.log and "with beat" in srv.log
        assert "[crasher] crasher going down" in srv.log  # stderr too
        delays = [
            float(d) for d in re.findall(r"process crasher: restarting in ([\d.]+)s", srv.log)
        ]
        assert delays[:3] == [0.2, 0.4, 0.8]  # doubling
        assert get(srv.url)[0] == 200  # the workers are not affected
        assert srv.stop() == 0


def test_processes_stop_in_reverse_order_and_a_stubborn_one_is_killed(tmp_path: Path) -> None:
    py = sys.executable
    config = _config(
        tmp_path,
        f"""
[[process]]
name = "first"
command = "{py} steady.py first"
cwd = "{tmp_path}"

[[process]]
name = "second"
command = "{py} steady.py second"
cwd = "{tmp_path}"
stop_signal = "SIGINT"

[[process]]
name = "stubborn"
command = ["{py}", "stubborn.py"]
cwd = "{tmp_path}"
stop_timeout = 0.5
""",
    )
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        srv.wait_for_log(r"\[first\] first up in", 10)
        srv.wait_for_log(r"\[second\] second up in", 10)
        srv.wait_for_log(r"\[stubborn\] stubborn up", 10)
        assert srv.stop() == 0
    log = srv.log
    order = [
        log.index("stopping process stubborn"),
        log.index("process stubborn did not stop in time: killing it"),
        log.index("stopping process second"),
        log.index("[second] second stopping on SIGINT"),
        log.index("stopping process first"),
        log.index("[first] first stopping on SIGTERM"),
        log.index("bastion stopped"),
    ]
    assert order == sorted(order), log


def test_an_invalid_process_table_is_a_configuration_error(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[[process]]\nname = "x"\ncommand = []\nstop_signal = "TERMINATE"\n',
    )
    srv = BastionProcess(["serve", "-c", str(config)], wait_ready=False)
    with srv:
        assert srv.wait(15) == 2
        wait_until(lambda: "command is empty" in srv.log, 5)
        assert "'TERMINATE' is not a signal name" in srv.log


def _live(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_supervisor_killed_with_sigkill_takes_its_processes_workers_and_admin_along(
    tmp_path: Path,
) -> None:
    py = sys.executable
    config = _config(
        tmp_path,
        f"""
[admin]
bind = "127.0.0.1:0"

[[process]]
name = "steady"
command = ["{py}", "steady.py", "steady"]
cwd = "{tmp_path}"
""",
    )
    config.write_text(config.read_text().replace("count = 1", "count = 2"))
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        srv.wait_for_log(r"\[steady\] steady up in", 10)
        found = srv.wait_for_log(r"process steady started \(pid (\d+)\)", 10)
        managed = int(found.group(1))
        children = child_pids(srv.pid)
        # two workers, the admin process and the managed one
        assert len(children) == 4 and managed in children, srv.log
        srv.signal(signal.SIGKILL)
        srv.wait(10)
        try:
            wait_until(lambda: not any(_live(p) for p in children), 10, f"{children} to exit")
        finally:
            for pid in children:
                if _live(pid):  # (the test failed: leave nothing behind)
                    os.kill(pid, signal.SIGKILL)


def _alive(pattern: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if pattern.encode() in cmdline and state != "Z":
                found.append(int(entry))
    return found


def _shell_process(tmp_path: Path, name: str, script: str, stop_timeout: float) -> Path:
    """A configuration with one [[process]]: ``sh script`` run in ``tmp_path``."""
    return _config(
        tmp_path,
        f"""
[[process]]
name = "{name}"
command = ["sh", "{script}"]
cwd = "{tmp_path}"
stop_timeout = {stop_timeout}
""",
    )


def test_what_a_shell_wrapper_started_is_stopped_with_it(tmp_path: Path) -> None:
    # "sh" passes no signal on: the whole process group is signalled, and what is left
    # of it when the program ends is killed
    marker = f"marker-{os.getpid()}-{tmp_path.name}"
    py = sys.executable
    (tmp_path / "kids.sh").write_text(
        f"{py} -c 'import time; time.sleep(301)' {marker} &\n"
        f"{py} -c 'import time; print(\"up\", flush=True); time.sleep(302)' {marker}\n"
    )
    config = _shell_process(tmp_path, "wrapper", "kids.sh", stop_timeout=2)
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        srv.wait_for_log(r"\[wrapper\] up", 10)
        wait_until(lambda: len(_alive(marker)) >= 2, 5, "the wrapper's children")
        assert srv.stop() == 0
    wait_until(lambda: not _alive(marker), 5, "nothing of the process group left")


def test_a_process_that_floods_its_output_does_not_hold_the_supervisor(tmp_path: Path) -> None:
    # a program writing lines far faster than they are logged: signals are still acted on
    config = _config(
        tmp_path,
        """
[[process]]
name = "flood"
command = ["yes"]
stop_timeout = 1
""",
    )
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        srv.wait_for_log(r"\[flood\] y", 10)
        assert get(srv.url)[0] == 200
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=15) == 0


def test_what_a_wrapper_started_gets_the_stops_grace(tmp_path: Path) -> None:
    # the wrapper ends at once on SIGTERM; what it started takes a second to finish
    # cleanly: it is not killed before the stop's deadline
    py = sys.executable
    done = tmp_path / "clean-exit"
    (tmp_path / "child.py").write_text(
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(1)\n"
        f"    open({str(done)!r}, 'w').close()\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('child up', flush=True)\n"
        "time.sleep(300)\n"
    )
    (tmp_path / "wrap.sh").write_text(f"{py} child.py &\nsleep 300\n")
    config = _shell_process(tmp_path, "wrapped", "wrap.sh", stop_timeout=5)
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        srv.wait_for_log(r"\[wrapped\] child up", 10)
        assert srv.stop() == 0
    assert done.exists(), srv.log
