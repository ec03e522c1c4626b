"""One run, one folder: the lock, stale-lock recovery, and training states read with clear
errors."""

import fcntl
import json
import multiprocessing
import os
import socket
import threading
import time

import pytest
import torch

from resnets.train.run_folder import RunFolder, RunLock, load_training_state


def _dead_pid() -> int:
    """A pid that no process has, found without starting and reaping a child (quicker; a
    child's exit here once crashed the xdist worker, by the OpenVINO signal-stack fault that
    tests/export/test_openvino.py::test_signals_after_models_are_freed now guards)."""
    pid_max = int(open("/proc/sys/kernel/pid_max").read()) if os.path.exists(
        "/proc/sys/kernel/pid_max") else 32768
    for pid in range(pid_max - 1, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise RuntimeError("no free pid")


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    first = RunFolder(tmp_path / "run", resume=False)
    first.start({"a": 1})
    second = RunFolder(tmp_path / "run", resume=False)
    with pytest.raises(FileExistsError, match=rf"run is in use by process {os.getpid()} "
                                              r"\(since .*\): wait for it"):
        second.start({"a": 2})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"a": 1}
    first.close()
    assert not (tmp_path / "run" / "run.lock").exists()


def test_lock_of_a_dead_process_is_recovered_with_a_message(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": _dead_pid(),
                                              "host": socket.gethostname(),
                                              "since": time.time()}))
    folder = RunFolder(run, resume=False)
    with caplog.at_level("WARNING"):
        folder.start({})
    assert "recovered the lock of process" in caplog.text
    assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    folder.close()


def test_lock_held_on_another_host_says_how_to_clear_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
    with pytest.raises(FileExistsError, match="in use by process 1 on elsewhere .* if that "
                                              "process is gone, delete"):
        RunFolder(run, resume=False).start({})


def _race_for_the_lock(folder, barrier, results, done):
    barrier.wait()
    try:
        lock = RunLock(folder)
        lock.acquire()
        results.put("took it")
        done.wait(60)  # hold it until every other process has tried
        lock.release()  # a forked child ends without running atexit
    except FileExistsError as e:
        results.put(str(e))


def test_racing_processes_never_see_a_half_written_lock(tmp_path):
    """CI once caught a second trainer reading run.lock between its creation and its
    write ("exists but cannot be read"); the loser must always be told who holds it."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(2):
        folder = tmp_path / f"run{round_}"
        folder.mkdir()
        barrier, results, done = ctx.Barrier(6), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_race_for_the_lock, args=(folder, barrier, results, done),
                             daemon=True) for _ in range(6)]  # ended if the test fails
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        done.set()
        for p in procs:
            p.join(timeout=60)
        assert outcomes.count("took it") == 1, outcomes
        assert all("is in use by process" in o for o in outcomes if o != "took it"), outcomes
        assert [f.name for f in folder.iterdir()] == []  # released, nothing left


def _hold_with_flock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_holder_that_has_not_written_its_record_yet_is_waited_for(tmp_path):
    """The holder writes its record just after taking the lock: a process refused in that
    moment reads again rather than naming nobody (or the run the holder took over from)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": _dead_pid(),
                                              "host": socket.gethostname(), "since": 0}))
    fd = _hold_with_flock(run / "run.lock")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    fill = threading.Timer(0.3, lambda: (run / "run.lock").write_text(json.dumps(holder)))
    fill.start()
    try:
        with pytest.raises(FileExistsError, match=f"in use by process {os.getpid()} "):
            RunFolder(run, resume=False).start({})
    finally:
        fill.join()
        os.close(fd)


def test_a_held_lock_without_a_record_is_still_refused(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    fd = _hold_with_flock(run / "run.lock")
    monkeypatch.setattr(RunLock, "READ_DEADLINE_S", 0.2)
    try:
        with pytest.raises(FileExistsError, match="in use by another process .*names no "
                                                  "holder"):
            RunFolder(run, resume=False).start({})
    finally:
        os.close(fd)
    assert not (run / "config.json").exists()


def test_a_live_process_named_in_an_unlocked_record_is_respected(tmp_path):
    """A lock made by a version before flock: its holder (alive here) is not overridden."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": os.getppid(),
                                              "host": socket.gethostname(), "since": 0}))
    with pytest.raises(FileExistsError, match=f"in use by process {os.getppid()} "):
        RunFolder(run, resume=False).start({})


def test_an_unreadable_record_nobody_holds_is_replaced_with_a_message(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("not json")
    folder = RunFolder(run, resume=False)
    with caplog.at_level("WARNING"):
        folder.start({})
    assert "replaced an unreadable lock record" in caplog.text
    assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    folder.close()
    assert not (run / "run.lock").exists()


def test_a_killed_holder_leaves_a_lock_the_next_run_takes(tmp_path):
    """The kernel drops a flock when its holder dies, even by SIGKILL."""
    run = tmp_path / "run"
    run.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def hold():
        RunLock(run).acquire()
        ready.set()
        time.sleep(600)

    child = ctx.Process(target=hold)
    child.start()
    try:
        assert ready.wait(60)
        with pytest.raises(FileExistsError, match=f"in use by process {child.pid} "):
            RunFolder(run, resume=False).start({})
    finally:
        child.kill()
        child.join(60)
    folder = RunFolder(run, resume=False)
    folder.start({})  # the record names a dead process: recovered
    folder.close()


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (os.urandom(200), "damaged or not a resnets training checkpoint"),
])
def test_damaged_training_state_names_file_and_reason(tmp_path, content, message):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot load checkpoint {path}: .*{message}"):
        load_training_state(path)


def test_a_state_without_config_is_not_a_training_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="not a resnets training checkpoint"):
        load_training_state(tmp_path / "last.pt")


def test_a_flock_record_of_a_reused_pid_is_taken_over(tmp_path, caplog):
    """A record written under flock whose lock nobody holds is over, even when its pid now
    belongs to a live process (a restarted container's pid 1, a reboot)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": os.getppid(), "flock": True,
                                              "host": socket.gethostname(), "since": 0}))
    folder = RunFolder(run, resume=False)
    with caplog.at_level("WARNING"):
        folder.start({})
    assert "recovered the lock of process" in caplog.text
    folder.close()


def _hold_then_die_leaving_a_forked_child(run, pids):
    RunLock(run).acquire()
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: outlives its parent for a while
        time.sleep(60)
        os._exit(0)
    pids.put(child)
    pids.close()
    pids.join_thread()  # flushed before the SIGKILL
    os.kill(os.getpid(), 9)


def test_a_forked_child_does_not_keep_a_dead_parent_s_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ctx = multiprocessing.get_context("fork")
    pids = ctx.Queue()
    parent = ctx.Process(target=_hold_then_die_leaving_a_forked_child, args=(run, pids))
    parent.start()
    child = pids.get(timeout=60)
    deadline = time.monotonic() + 60
    while parent.exitcode is None and time.monotonic() < deadline:  # not join(): the
        time.sleep(0.05)  # grandchild holds the sentinel pipe join() would wait on
    assert parent.exitcode == -9
    try:
        assert os.path.exists(f"/proc/{child}")  # still running, the parent gone
        folder = RunFolder(run, resume=False)
        folder.start({})  # at once: the child closed its copy of the lock at the fork
        folder.close()
    finally:
        os.kill(child, 9)


@pytest.mark.parametrize("how", ["refused", "missing"])
def test_without_flock_the_file_itself_is_the_lock(tmp_path, monkeypatch, how):
    """A file system that refuses flock (NFS without a lock daemon), or no fcntl at all
    (Windows): the lock is run.lock created exclusively, with the holder named."""
    import errno

    from resnets.train import run_folder

    if how == "missing":
        monkeypatch.setattr(run_folder, "fcntl", None)
    else:
        def refuse(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")
        monkeypatch.setattr(fcntl, "flock", refuse)
    first = RunFolder(tmp_path / "run", resume=False)
    first.start({})
    record = json.loads((tmp_path / "run" / "run.lock").read_text())
    assert record["pid"] == os.getpid() and record["flock"] is False
    monkeypatch.setattr(RunLock, "READ_DEADLINE_S", 0.2)
    with pytest.raises(FileExistsError, match=f"in use by process {os.getpid()} "):
        RunFolder(tmp_path / "run", resume=False).start({})
    first.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_resume_removes_a_dead_writers_leftovers_but_not_a_live_ones(tmp_path):
    """Under its lock a resumed run removes a killed write's temporary file however recent,
    and keeps one a live process is writing into the folder (an export beside the run)."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 1, "config": {}, "model": {}}, run / "last.pt")
    dead = run / f".last.pt.{_dead_pid()}.abc123.tmp.pt"
    live = run / f".model.onnx.{os.getpid()}.def456.tmp.onnx"
    other = run / "notes.tmp.txt"  # not ours: not a temporary file's name
    for path in (dead, live, other):
        path.write_bytes(b"partial")
    folder = RunFolder(run, resume=True)
    try:
        assert not dead.exists()
        assert live.exists() and other.exists()
    finally:
        folder.close()
