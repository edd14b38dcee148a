"""The sandbox worker behind `kpdd.sandbox.executor`, and the framing both sides speak.

The parent starts this file as a script (`python -I -S _worker.py CONFIG`), so a worker imports
only the standard library, never kpdd. Once at start a worker leaves the host's world at the
isolation level it was asked for, then serves requests from fd 0 and replies on fd 1:

- "full" (root): new network, mount and pid namespaces; `chroot` into a private tmpfs; its own uid.
- "userns" (no root, user namespaces allowed): the same inside a user namespace, with every
  capability dropped instead of a uid switch.
- "rlimits": resource limits, an empty environment, a temporary working directory and (as root)
  its own uid; programs can still read the host's files and reach the network.

In the namespace levels the worker is pid 1 of its pid namespace, so a program can neither signal
it nor leave a process behind it. Each program runs in a fresh fork with rlimits set, and the
worker, which never runs untrusted code, enforces the wall-clock timeout.

Modules only the worker needs are imported inside functions: the parent imports this file for the
framing and should stay light.
"""

import gc
import json
import os
import struct
import sys
import time

ERROR_TYPES = ("timeout", "memory", "syntax", "runtime", "no_answer", "non_numeric")
ISOLATION_LEVELS = ("full", "userns", "rlimits")  # strongest first
# Imported before the jail closes (after it no module file can be found): the harmless modules
# programs may use, then the worker's own.
PROGRAM_MODULES = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
                   "collections", "re", "datetime", "operator", "numbers", "random", "string",
                   "heapq", "bisect")
_WORKER_MODULES = ("ctypes", "resource", "select", "signal")
RESULT_LIMIT = 1 << 16  # bytes a child may send back; anything longer is malformed
DETAIL_LIMIT = 200  # characters of error detail
FILE_LIMIT = 1 << 20  # RLIMIT_FSIZE: the largest file a program may write
JAIL_SIZE = "8m"  # the tmpfs every namespaced worker lives in
RESULT_FD = 3  # a child's only open fd besides 0-2 (/dev/null)
_MAX_FD = 1 << 20
_HEADER = struct.Struct(">I")
_exit = os._exit  # bound now: a program may replace os._exit in its own fork


def write_frame(fd: int, message: dict) -> None:
    data = json.dumps(message).encode()
    data = _HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def read_frame(fd: int, deadline: float | None = None, limit: int = 1 << 30) -> dict:
    """One length-prefixed JSON message. Raises EOFError, TimeoutError (past `deadline`, a
    `time.monotonic()` value) or ValueError (over `limit` bytes, or not a JSON object)."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > limit:
        raise ValueError(f"a {size}-byte message exceeds the {limit}-byte limit")
    message = json.loads(_read_exact(fd, size, deadline))
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    import select

    data = b""
    while len(data) < size:
        if deadline is not None:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                raise TimeoutError
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# ---- leaving the host's world (once per worker) -----------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38


_libc = None


def _libc_call(name: str, *args) -> None:
    import ctypes

    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def enter_sandbox(level: str, uid: int | None, jail: str) -> None:
    """Put this process in the sandbox `level`. `uid` is the worker's own uid (when started as
    root); `jail` is its empty private directory. The namespace levels fork once: only pid 1 of
    the new pid namespace returns from here."""
    import resource

    if level == "full":
        if uid is None:
            raise OSError("full isolation needs root and a free unprivileged uid to switch to")
        _libc_call("unshare", _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWPID)
        _become_pid_one()
        _enter_jail(jail, uid)
        _become_user(uid)
    elif level == "userns":
        if uid is not None:  # root: switch uid first, so the namespace maps an unprivileged one
            _become_user(uid)
            _libc_call("prctl", _PR_SET_DUMPABLE, 1, 0, 0, 0)  # else /proc/self stays root's
        outer_uid, outer_gid = os.getuid(), os.getgid()
        _libc_call("unshare", _CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWPID)
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {outer_uid} 1"), ("gid_map", f"0 {outer_gid} 1")):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
        _become_pid_one()
        _enter_jail(jail, 0)
        _drop_capabilities()
    else:
        os.chdir(jail)
        if uid is not None:  # root ignores RLIMIT_NPROC: without this a fork loop is unbounded
            os.chown(jail, uid, uid)
            _become_user(uid)
    os.environ.clear()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc_call("prctl", _PR_SET_DUMPABLE, 0, 0, 0, 0)  # children share our uid: keep them from ptrace


def _become_pid_one() -> None:
    """Fork into the new pid namespace. The original process only waits, outside it."""
    import signal

    inner = os.fork()
    if inner == 0:
        _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the parent kills the outer one
        return
    os.closerange(0, _MAX_FD)  # so the parent sees EOF as soon as pid 1 dies
    _, status = os.waitpid(inner, 0)
    _exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _enter_jail(jail: str, owner: int) -> None:
    from ctypes import c_ulong

    _libc_call("mount", None, b"/", None, c_ulong(_MS_REC | _MS_PRIVATE), None)  # nothing reaches the host
    options = f"size={JAIL_SIZE},nr_inodes=256,mode=0700,uid={owner},gid={owner}".encode()
    flags = c_ulong(_MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _libc_call("mount", b"tmpfs", jail.encode(), b"tmpfs", flags, options)
    os.chdir(jail)
    os.chroot(".")


def _become_user(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _drop_capabilities() -> None:
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _libc_call("capset", header, (ctypes.c_uint32 * 6)())  # empty effective, permitted and inheritable sets


# ---- one program, in a fresh fork of the worker ---------------------------------------------

def run_program(program: str, timeout: float, memory_mb: int) -> dict:
    """Run `program` in a child and return {"value": float} or {"error": type, "detail": text}."""
    import signal

    read_end, write_end = os.pipe()
    deadline = time.monotonic() + timeout
    pid = os.fork()
    if pid == 0:
        _run_child(program, write_end, timeout, memory_mb)
    os.close(write_end)
    status = None
    try:
        reply = _checked(read_frame(read_end, deadline, RESULT_LIMIT))
    except TimeoutError:
        reply = _error("timeout", f"the program ran past its {timeout:g} s wall-clock limit")
    except EOFError:  # it died or closed the pipe without a result: its exit status tells why
        status, reply = _wait_exit(pid, deadline), None
    except ValueError:
        reply = _error("runtime", "the program wrote a malformed result")
    finally:
        os.close(read_end)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return reply or _describe_exit(status, timeout)


def _wait_exit(pid: int, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    return None


def _describe_exit(status: int | None, timeout: float) -> dict:
    import signal

    if status is None:
        return _error("timeout", f"the program ran past its {timeout:g} s wall-clock limit")
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return _error("runtime", f"the program exited with status {code} before setting a result")
    name = signal.Signals(-code).name
    if -code == signal.SIGXCPU:
        return _error("timeout", "the program used up its CPU-time limit")
    if -code == signal.SIGKILL:
        return _error("memory", "the program was killed by SIGKILL (out of memory?)")
    hint = " (a stack overflow from deep recursion?)" if -code == signal.SIGSEGV else ""
    return _error("runtime", f"the program crashed with {name}{hint}")


def _checked(message: dict) -> dict:
    """A child is untrusted: pass on only a well-formed result."""
    value, error, detail = message.get("value"), message.get("error"), message.get("detail", "")
    if error is None and isinstance(value, float) and abs(value) != float("inf") and value == value:
        return {"value": value}
    if value is None and error in ERROR_TYPES and isinstance(detail, str):
        return _error(error, detail)
    raise ValueError("malformed result")


def _run_child(program: str, write_end: int, timeout: float, memory_mb: int) -> None:
    """The forked child: only fds 0-2 (/dev/null) and RESULT_FD stay open. Never returns."""
    import signal

    try:
        os.dup2(write_end, RESULT_FD)
        os.closerange(RESULT_FD + 1, _MAX_FD)
        _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # no orphan outlives its worker
        _set_limits(timeout, memory_mb)
        message = _evaluate(program)
    except MemoryError:
        message = _error("memory", "MemoryError: the program ran out of its memory limit")
    except BaseException as exc:  # a program can make anything fail; report it
        message = _error("runtime", _describe(exc))
    try:
        write_frame(RESULT_FD, message)
    finally:
        _exit(0)


def _set_limits(timeout: float, memory_mb: int) -> None:
    import resource

    cpu_seconds = int(timeout) + 1  # a backstop: the worker's wall clock normally acts first
    for limit, soft, hard in ((resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
                              (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
                              (resource.RLIMIT_FSIZE, FILE_LIMIT, FILE_LIMIT),
                              (resource.RLIMIT_NPROC, 0, 0)):
        ceiling = resource.getrlimit(limit)[1]  # a container may already cap it lower
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(limit, (soft, hard))


def _evaluate(program: str) -> dict:
    try:
        code = compile(program, "<program>", "exec")
    except MemoryError:
        return _error("memory", "MemoryError while compiling the program")
    except Exception as exc:  # SyntaxError, or ValueError for null bytes
        return _error("syntax", _describe(exc))
    import builtins

    # Poisoned builtins die with this fork anyway; the copy and the restore keep our own code below working.
    original_builtins = vars(builtins).copy()
    namespace = {"__name__": "__main__", "__builtins__": original_builtins.copy()}
    try:
        exec(code, namespace)
    except MemoryError:
        namespace.clear()  # free what the program holds before building the message
        return _error("memory", "MemoryError: the program ran out of its memory limit")
    except SystemExit as exc:
        return _error("runtime", f"the program called sys.exit({_safe(repr, exc.code)})")
    except BaseException as exc:  # any failure of the program is its result
        return _error("runtime", _describe(exc))
    finally:
        vars(builtins).update(original_builtins)
    if "ans" not in namespace:
        return _error("no_answer", "the program did not set `ans`")
    return _to_number(namespace["ans"])


def _to_number(ans) -> dict:
    """int, float, Fraction and Decimal answers become a float; bools, strings, inf and nan do not."""
    import decimal
    import math
    import numbers

    if isinstance(ans, bool) or not isinstance(ans, (numbers.Real, decimal.Decimal)):
        return _error("non_numeric", f"`ans` is a {type(ans).__name__}: {_safe(repr, ans)}")
    try:
        value = float(ans)
    except Exception as exc:  # a program's own number type may raise anything
        return _error("non_numeric", f"`ans` does not convert to a float: {_describe(exc)}")
    if not math.isfinite(value):
        return _error("non_numeric", f"`ans` is {value}")
    return {"value": value}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe(str, exc)}"


def _safe(to_text, obj) -> str:
    try:
        return to_text(obj)
    except Exception:  # a program's object may refuse to print
        return "<unprintable>"


def _error(error: str, detail: str) -> dict:
    return {"error": error, "detail": detail if len(detail) <= DETAIL_LIMIT else detail[:DETAIL_LIMIT - 1] + "…"}


# ---- the worker ---------------------------------------------------------------------------------

def serve(requests: int, replies: int, memory_mb: int) -> None:
    """Answer requests until the parent closes the pipe. A program that left files behind gets its
    worker recycled, so nothing carries over to the next program."""
    while True:
        try:
            request = read_frame(requests)
        except EOFError:
            return
        reply = run_program(request["program"], request["timeout"], memory_mb)
        reply["recycle"] = _left_traces()
        write_frame(replies, reply)
        if reply["recycle"]:
            return


def _left_traces() -> bool:
    try:
        return bool(os.listdir("."))
    except OSError:  # the program took the jail's permissions away: recycle too
        return True


def main() -> int:
    config = json.loads(sys.argv[1])
    requests, replies = os.dup(0), os.dup(1)  # keep the parent's pipes off fds 0-2
    devnull = os.open(os.devnull, os.O_RDWR)  # before the jail: there is no /dev inside it
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # print() output is discarded and input() sees end of file
    os.close(devnull)
    try:
        for name in PROGRAM_MODULES + _WORKER_MODULES:
            __import__(name)
        enter_sandbox(config["level"], config["uid"], config["jail"])
    except Exception as exc:  # reported to the parent, which tries a weaker level
        write_frame(replies, {"failed": f"{type(exc).__name__}: {exc}"})
        return 1
    _evaluate("from fractions import Fraction\nans = Fraction(7, 2) * 2")  # warm the compiler up once, not per fork
    gc.freeze()  # a fork's allocations then never make the collector walk (and copy) the worker's objects
    write_frame(replies, {"ready": config["level"]})
    serve(requests, replies, config["memory_mb"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
