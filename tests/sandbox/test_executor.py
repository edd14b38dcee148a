"""The sandboxed executor: values, every error type, and an adversarial suite that must stay contained.

As root on Linux (as in CI) the pools run with "full" isolation, so the adversarial programs here
are really run against the namespaces, the chroot and the uid switch.
"""

import errno
import glob
import logging
import os
import socket
import sys
import tempfile
import threading

import pytest

from kpdd.errors import ConfigError, KpddError
from kpdd.sandbox import executor
from kpdd.sandbox.executor import ERROR_TYPES, ExecutionResult, ExecutorPool, execute

FULL_ISOLATION_EXPECTED = sys.platform == "linux" and os.geteuid() == 0
SECRET = "kpdd-test-secret-4b1d"


@pytest.fixture(scope="module")
def pool():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KPDD_TEST_SECRET", SECRET)  # set before the workers start: they must still not see it
        with ExecutorPool(workers=2, memory_mb=128) as pool:
            yield pool


def require_namespaces(pool):
    """Without namespaces ("rlimits", a laptop without root or user namespaces) programs can read
    the host's files and reach the network: those tests only run where containment is claimed."""
    if pool.isolation == "rlimits":
        pytest.skip("rlimits isolation does not contain the file system or the network")


def assert_healthy(pool):
    """Every worker of the pool still runs a normal program correctly."""
    for n in range(pool.workers + 1):
        assert pool.execute(f"ans = sum(range({n} + 5))", timeout=1.0) == ExecutionResult(sum(range(n + 5)))


@pytest.mark.parametrize("program, value", [
    ("ans = 16 - 3 - 4", 9.0),
    ("price = 2.5\nans = price * 4", 10.0),
    ("ans = -7 * 3", -21.0),
    ("from fractions import Fraction\nans = Fraction(1, 3) + Fraction(1, 6)", 0.5),
    ("from decimal import Decimal\nans = Decimal('0.1') * 3", 0.3),
    ("import math\nans = math.sqrt(16) + math.floor(2.7)", 6.0),
    ("def solve():\n    return 12 // 5\nans = solve()", 2.0),
    ("print('working...')\nans = 1e-3", 0.001),
])
def test_execute_returns_value_of_ans(pool, program, value):
    result = pool.execute(program)
    assert result.error is None, result.detail
    assert result.value == pytest.approx(value)


@pytest.mark.parametrize("program, error, detail", [
    ("ans = (1 +", "syntax", "SyntaxError"),
    ("ans = 1\x00", "syntax", "null"),
    ("ans = 1 / 0", "runtime", "ZeroDivisionError: division by zero"),
    ("ans = undefined_name", "runtime", "NameError"),
    ("x = 5", "no_answer", "`ans`"),
    ("ans = '18 dollars'", "non_numeric", "str"),
    ("ans = True", "non_numeric", "bool"),
    ("ans = float('nan')", "non_numeric", "nan"),
    ("ans = float('inf')", "non_numeric", "inf"),
    ("ans = 10 ** 400", "non_numeric", "float"),
    ("ans = 3 + 4j", "non_numeric", "complex"),
    ("ans = [1, 2]", "non_numeric", "list"),
    ("ans = input()", "runtime", "EOFError"),
])
def test_execute_reports_each_error_type(pool, program, error, detail):
    result = pool.execute(program)
    assert (result.value, result.error) == (None, error)
    assert detail in result.detail
    assert error in ERROR_TYPES


def test_execute_through_the_default_pool():
    assert execute("ans = 6 * 7") == ExecutionResult(42.0)
    assert executor.default_pool() is executor.default_pool()


def test_pool_has_full_isolation_as_root_on_linux(pool):
    if not FULL_ISOLATION_EXPECTED:
        pytest.skip("full isolation needs root on Linux")
    assert pool.isolation == "full"
    assert pool.execute("import os\nans = os.getuid()").value > 65535
    assert pool.execute("import os\nans = len(os.listdir('/'))").value == 0


# ---- adversarial programs: each contained, typed, and the pool healthy afterwards ------------

def test_infinite_loop_times_out(pool):
    result = pool.execute("while True:\n    pass", timeout=0.3)
    assert result.error == "timeout"
    assert_healthy(pool)


def test_sleeping_program_times_out(pool):
    assert pool.execute("import time\ntime.sleep(60)\nans = 1", timeout=0.2).error == "timeout"
    assert_healthy(pool)


def test_memory_growth_hits_the_memory_limit(pool):
    result = pool.execute("x = []\nwhile True:\n    x.append('a' * 10**6)", timeout=5.0)
    assert result.error == "memory"
    assert_healthy(pool)


def test_shell_command_cannot_touch_the_host(pool, tmp_path):
    target = tmp_path / "pwned"
    result = pool.execute(f"import os\nans = os.system('echo hi > {target}')")
    assert not target.exists()
    assert result.value != 0  # no shell ran: an error, or the failure status of os.system
    assert_healthy(pool)


def test_subprocess_is_unavailable(pool, tmp_path):
    target = tmp_path / "touched"
    result = pool.execute(f"import subprocess\nsubprocess.run(['touch', '{target}'])\nans = 1")
    assert result.error == "runtime"
    assert not target.exists()


def test_bounded_fork_loop_is_refused(pool):
    result = pool.execute("import os\nfor _ in range(20):\n    os.fork()\nans = 1")
    assert result.error == "runtime"
    assert "BlockingIOError" in result.detail
    assert_healthy(pool)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    yield server
    server.close()


def test_socket_module_is_unavailable(pool, listener):
    require_namespaces(pool)
    port = listener.getsockname()[1]
    result = pool.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\nans = 1")
    assert result.error == "runtime"
    with pytest.raises(TimeoutError):
        listener.accept()


def test_raw_socket_has_no_network(pool, listener):
    require_namespaces(pool)
    port = listener.getsockname()[1]
    program = (  # the connect(2) system call itself, through ctypes, to a port that is listening
        "import ctypes, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        f"address = struct.pack('=H', 2) + struct.pack('>H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
        "ans = 0 if libc.connect(fd, address, 16) == 0 else ctypes.get_errno()\n")
    assert pool.execute(program).value == errno.ENETUNREACH
    with pytest.raises(TimeoutError):
        listener.accept()


def test_host_files_are_invisible(pool):
    require_namespaces(pool)
    result = pool.execute("ans = len(open('/etc/passwd').read())")
    assert result.error == "runtime"
    assert "FileNotFoundError" in result.detail or "PermissionError" in result.detail


def test_writes_never_reach_the_host(pool, tmp_path):
    require_namespaces(pool)
    target = tmp_path / "written.txt"
    result = pool.execute(f"open('{target}', 'w').write('x')\nans = 1")
    assert result.error == "runtime"
    assert not target.exists()
    assert pool.execute("open('note.txt', 'w').write('x')\nans = 1").value == 1
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "kpdd-sandbox-*", "note.txt"))
    assert_healthy(pool)


def test_big_file_is_bounded(pool):
    result = pool.execute("with open('big', 'w') as f:\n    f.write('a' * 4_000_000)\nans = 1", timeout=5.0)
    assert result.error == "runtime"
    assert "File too large" in result.detail
    assert_healthy(pool)


def test_files_do_not_carry_over_to_the_next_program(pool):
    pool.execute("open('left.txt', 'w').write('x')\nans = 1")
    for _ in range(pool.workers):
        assert pool.execute("import os\nans = len(os.listdir('.'))").value == 0


@pytest.mark.parametrize("program, detail", [
    ("import sys\nsys.exit(3)", "sys.exit(3)"),
    ("import os\nos._exit(0)", "exited with status 0"),
    ("import sys\nsys.setrecursionlimit(10**7)\nclass A:\n    def __repr__(self):\n        return repr(self)\n"
     "ans = len(repr(A()))", "crashed with SIGSEGV"),
    ("def f(n):\n    return f(n + 1)\nans = f(0)", "RecursionError"),
])
def test_exits_and_crashes_are_runtime_errors(pool, program, detail):
    result = pool.execute(program)
    assert result.error == "runtime"
    assert detail in result.detail
    assert_healthy(pool)


def test_print_flood_is_discarded(pool):
    result = pool.execute("for i in range(20000):\n    print('x' * 1000)\nans = 5", timeout=5.0)
    assert result == ExecutionResult(5.0)


def test_environment_secrets_are_invisible(pool):
    require_namespaces(pool)  # else /proc/<pid>/environ of the test process is readable
    program = (
        f"import os\nsecret = {SECRET!r}\nseen = [str(dict(os.environ))]\n"
        "for path in ('/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ'):\n"
        "    try:\n        seen.append(open(path).read())\n    except OSError:\n        pass\n"
        "ans = sum(secret in text for text in seen)\n")
    assert pool.execute(program) == ExecutionResult(0.0)


def test_poisoned_builtins_do_not_leak(pool):
    poison = "__builtins__['len'] = None\nimport builtins\nbuiltins.abs = lambda x: 42\nans = 1"
    assert pool.execute(poison).value == 1
    for _ in range(pool.workers + 1):
        assert pool.execute("ans = len([1, 2]) + abs(-3)").value == 5


def test_program_cannot_kill_its_worker(pool):
    result = pool.execute("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nans = 1")
    assert result.error in (None, "runtime")
    assert_healthy(pool)
    if pool.isolation != "rlimits":  # its worker is pid 1 of its own pid namespace
        program = ("import os, signal\nfor pid, sig in ((-1, signal.SIGKILL), (1, signal.SIGKILL), (1, signal.SIGSTOP)):\n"
                   "    try:\n        os.kill(pid, sig)\n    except ProcessLookupError:  # nobody else to kill\n"
                   "        pass\nans = 2")
        result = pool.execute(program)
        assert result == ExecutionResult(2.0)
        assert_healthy(pool)


def test_killed_worker_is_replaced():
    with ExecutorPool(workers=1, memory_mb=64, isolation="rlimits") as weak:  # here the worker is killable
        result = weak.execute("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nans = 1")
        assert result.error == "runtime"
        assert "worker died" in result.detail
        assert_healthy(weak)


def test_stalled_worker_is_replaced(monkeypatch):
    monkeypatch.setattr(executor, "REPLY_SLACK", 0.2)
    with ExecutorPool(workers=1, memory_mb=64, isolation="rlimits") as weak:
        result = weak.execute("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nans = 1", timeout=0.2)
        assert result.error == "timeout"
        assert "stopped answering" in result.detail
        assert_healthy(weak)


# ---- the pool itself --------------------------------------------------------------------------

def test_concurrent_threads_get_their_own_results(pool):
    results, errors = {}, []

    def work(thread: int):
        for i in range(15):
            result = pool.execute(f"a = {thread}\nb = {i}\nans = a * 100 + b")
            if result.value != thread * 100 + i:
                errors.append((thread, i, result))
        results[thread] = True

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8


def test_execute_many_keeps_order(pool):
    results = pool.execute_many([f"ans = {i} * 2" for i in range(30)] + ["ans = 1 / 0"])
    assert [r.value for r in results[:30]] == [i * 2.0 for i in range(30)]
    assert results[30].error == "runtime"


def test_rlimits_isolation_still_runs_programs():
    with ExecutorPool(workers=1, isolation="rlimits") as weak:
        assert weak.isolation == "rlimits"
        assert weak.execute("ans = 2 ** 10") == ExecutionResult(1024.0)


def test_falls_back_to_a_weaker_level_with_one_warning(monkeypatch, caplog):
    if not FULL_ISOLATION_EXPECTED:
        pytest.skip("simulates losing full isolation as root")
    monkeypatch.setattr(executor, "_sandbox_uid", lambda: None)  # no uid to switch to: "full" fails
    monkeypatch.setattr(executor, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="kpdd.sandbox.executor"):
        with ExecutorPool(workers=1) as weaker:
            assert weaker.isolation in ("userns", "rlimits")
            assert weaker.execute("ans = 3 * 3").value == 9
        with ExecutorPool(workers=1):
            pass
    warnings = [r for r in caplog.records if "isolation only" in r.getMessage()]
    assert len(warnings) == 1


def test_closed_pool_refuses_work():
    weak = ExecutorPool(workers=1, isolation="rlimits")
    weak.close()
    weak.close()  # closing twice is harmless
    with pytest.raises(KpddError, match="closed"):
        weak.execute("ans = 1")


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, "workers"),
    ({"memory_mb": 1}, "memory_mb"),
    ({"isolation": "chroot"}, "isolation"),
])
def test_pool_rejects_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExecutorPool(**kwargs)


def test_execute_rejects_bad_timeout(pool):
    with pytest.raises(ConfigError, match="timeout"):
        pool.execute("ans = 1", timeout=0)
