"""One run, one folder: the lock, stale-lock recovery, and training states read with clear
errors."""

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


def _race_for_the_lock(folder, barrier, results):
    barrier.wait()
    try:
        lock = RunLock(folder)
        lock.acquire()
        results.put("took it")
        time.sleep(0.5)  # hold it while the others look
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
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_race_for_the_lock, args=(folder, barrier, results))
                 for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcomes.count("took it") == 1, outcomes
        assert all("is in use by process" in o for o in outcomes if o != "took it"), outcomes
        assert [f.name for f in folder.iterdir()] == []  # released, no private file left


def test_lock_read_while_its_writer_fills_it_names_the_holder(tmp_path):
    """A lock made by exclusive create (file systems without hard links) is empty for a
    moment: it is read again rather than called unreadable."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("")
    holder = {"pid": 1, "host": "elsewhere", "since": 0}
    fill = threading.Timer(0.3, lambda: (run / "run.lock").write_text(json.dumps(holder)))
    fill.start()
    with pytest.raises(FileExistsError, match="in use by process 1 on elsewhere"):
        RunFolder(run, resume=False).start({})
    fill.join()


def test_lock_without_hard_links_falls_back_to_exclusive_create(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    folder = RunFolder(tmp_path / "run", resume=False)
    folder.start({})
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["pid"] == os.getpid()
    with pytest.raises(FileExistsError, match="is in use by process"):
        RunFolder(tmp_path / "run", resume=False).start({})
    folder.close()
    assert sorted(f.name for f in (tmp_path / "run").iterdir()) == ["config.json"]


def test_unreadable_lock_is_refused_with_what_to_do(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("not json")
    with pytest.raises(FileExistsError, match="exists but cannot be read: if no training "
                                              "runs in this folder, delete it"):
        RunFolder(run, resume=False).start({})


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
