"""The reference interpreters in a child process, so that one crashing on a model is a reported
refusal and never the death of qsim.

TFLite Micro's runtime and LiteRT are C++ without a sandbox: a corrupt model can make them read
wild pointers in ``Interpreter.__init__`` (SIGSEGV), and both abort the process on a SOFTMAX row
whose sum of exponentials reaches 512 (SIGABRT).  :class:`ChildRunner` has the interface of the
in-process runners of :mod:`qsim.refrun` (``run(inputs, tensors) -> {tensor index: array}``) and
forwards every call to a child Python process that hosts them.

One child, started on first use and kept for the life of this process, hosts every reference
(LiteRT BUILTIN_REF, LiteRT's XNNPACK run, TFLite Micro): every input set of a ``qsim check``, each
reference in turn, and every later runner reuse it, so its start-up (a Python interpreter, numpy and
the libraries' imports, which qsim no longer pays itself) is paid once.  Requests are answered in
order, so when the child dies (a signal or an exit status) the request in flight names the culprit:
the runner raises :class:`qsim.refrun.ReferenceCrashed`, e.g. "TFLite Micro crashed on this model:
SIGSEGV", and the next runner gets a fresh child (the other references are then unaffected, since
``qsim check`` runs them one after the other).  A model load or an inference that takes longer
than :data:`TIMEOUT_S` seconds (environment ``QSIM_REFERENCE_TIMEOUT``) kills the child and is
reported the same way.

Protocol, over the child's stdin/stdout pipes: each message is a header (pickle length, number of
out-of-band buffers and their lengths, little-endian) then a pickle (protocol 5); in the replies
numpy arrays travel out of band, as their raw memory after the pickle, read straight into the
buffers the parent's arrays then use.  Requests:
``("open", handle, reference, model bytes, arena bytes or None)`` (one reply), ``("run", handle,
[input sets], tensor indices)`` (one reply per input set, each sent as soon as it is computed),
``("close", handle)`` (no reply).  Replies: ``("ok", value)``, ``("refused", reason)``,
``("qsim_error", message)``.  The child moves its own fd 1 onto its stderr before
anything can print, so a C++ ``printf`` cannot corrupt the replies; its stderr goes to a temporary
file whose last line is quoted when it crashes.
"""
from __future__ import annotations

import atexit
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import refrun
from .errors import QsimError
from .refrun import ReferenceCrashed, ReferenceRefused

TIMEOUT_S = float(os.environ.get("QSIM_REFERENCE_TIMEOUT", "120"))
LIBRARY = {"litert": "litert", "xnnpack": "litert", "tflm": "tflm"}  # reference -> library it needs
TITLE = {"litert": "LiteRT", "xnnpack": "LiteRT", "tflm": "TFLite Micro"}
_HEADER = struct.Struct("<QI")  # pickle length, number of out-of-band buffers (then one length each)
_LENGTH = struct.Struct("<Q")


# ------------------------------------------------------------------ framing (both sides)

def _send(fd: int, obj, out_of_band: bool = False) -> None:
    """One framed message; ``obj`` already pickled (bytes) or any picklable object.
    ``out_of_band``: numpy arrays' memory is written as it is, after the pickle, and read back
    into buffers the arrays then use (pickle protocol 5): no copy into or out of the pickle."""
    bufs: list = []
    data = obj if isinstance(obj, bytes) else \
        pickle.dumps(obj, protocol=5, buffer_callback=bufs.append if out_of_band else None)
    raws = [b.raw() for b in bufs]
    head = _HEADER.pack(len(data), len(raws)) + b"".join(_LENGTH.pack(r.nbytes) for r in raws)
    for part in (memoryview(head), memoryview(data), *raws):
        while part:
            part = part[os.write(fd, part):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytearray | None:
    """``n`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline`` (monotonic s)."""
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    poller = None
    while pos < n:
        if deadline is not None:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            return None
        pos += got
    return buf


def _recv(fd: int, deadline: float | None = None):
    """One message from :func:`_send`; None at end of file."""
    head = _read_exact(fd, _HEADER.size, deadline)
    if head is None:
        return None
    size, n_buffers = _HEADER.unpack(head)
    lengths = _read_exact(fd, _LENGTH.size * n_buffers, deadline) if n_buffers else b""
    body = _read_exact(fd, size, deadline) if lengths is not None else None
    if body is None:
        return None
    buffers = []
    for (length,) in _LENGTH.iter_unpack(lengths):
        buf = _read_exact(fd, length, deadline)
        if buf is None:
            return None
        buffers.append(buf)
    return pickle.loads(body, buffers=buffers)


# ------------------------------------------------------------------ parent side

def _describe_exit(returncode: int) -> str:
    """"SIGSEGV" for a signal, "exit status 3" otherwise."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class _Reply:
    """A request's answer, read from the child on :meth:`get` (so the parent can work meanwhile)."""

    def __init__(self, child: "_Child", kind: str, title: str, timeout: float | None, after=None):
        self.child, self.kind, self.title, self.timeout, self.after = child, kind, title, timeout, after
        self.mark = 0  # size of the child's stderr when the request was sent
        self.status: str | None = None  # "ok", "refused", "qsim_error", "crashed" once read
        self.value = None

    def get(self):
        """The value; ReferenceRefused / QsimError as the child said, ReferenceCrashed when it died
        or did not answer within the timeout (counted from the start of this wait)."""
        if self.after is not None:  # the runner's "open": its refusal comes first
            self.after.get()
        if self.status is None:
            with self.child.lock:
                self.child.collect(self)
        if self.status == "ok":
            return self.value
        if self.status == "qsim_error":
            raise QsimError(self.value)
        raise (ReferenceCrashed if self.status == "crashed" else ReferenceRefused)(self.value)


class _Child:
    """The child process hosting the runners.  Requests are answered in order; the replies not
    yet read wait in ``queue``.  Before a request is sent, the replies of earlier "run" requests
    (which may be large) are read, so the child never blocks writing a reply while the parent
    blocks writing a request."""

    def __init__(self, libraries):
        self.libraries = list(dict.fromkeys(libraries))  # the first is imported as the child starts
        self.owner = os.getpid()
        self.dead: str | None = None  # why it can no longer answer (crash / timeout / stopped)
        self.lock = threading.Lock()
        self.handles = 0
        self.queue: list[_Reply] = []
        self.to_close: list[int] = []  # handles of garbage-collected runners, closed before the next call
        self.err = tempfile.TemporaryFile()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # qsim importable in the child however we found it
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "qsim.refchild", *self.libraries], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        except OSError as e:
            self.err.close()
            raise QsimError(f"could not start the process that runs the reference interpreters "
                            f"({sys.executable} -m qsim.refchild): {e}") from None
        # Requests are written by a thread: a model or a batch of inputs larger than the pipe's
        # buffer would otherwise block the caller until the child, still importing, reads it.
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.writer = threading.Thread(target=self._writer, name="qsim-refchild-writer", daemon=True)
        self.writer.start()

    def _writer(self) -> None:
        fd = self.proc.stdin.fileno()
        while (data := self.outbox.get()) is not None:
            try:
                _send(fd, data)
            except OSError:  # the child is gone: the reader sees end of file and says how it died
                return

    @property
    def usable(self) -> bool:
        return self.dead is None and self.owner == os.getpid() and self.proc.poll() is None

    def new_handle(self) -> int:
        self.handles += 1
        return self.handles

    def submit(self, msg: tuple, title: str, timeout: float | None = None, after: _Reply | None = None,
               replies: int = 1) -> list[_Reply]:
        """Send ``msg`` now; its ``replies`` answers are read by the returned replies' ``get()``."""
        with self.lock:
            for r in [r for r in self.queue if r.kind != "open"]:  # earlier runs' (large) replies first
                self.collect(r)
            out = [_Reply(self, msg[0], title, timeout, after) for _ in range(replies)]
            if self.dead is None:
                mark = os.fstat(self.err.fileno()).st_size
                for r in out:
                    r.mark = mark
                while self.to_close:
                    self.outbox.put(("close", self.to_close.pop()))
                self.outbox.put(pickle.dumps(msg, protocol=5))  # pickled now: later changes to the arrays don't count
            if self.dead is not None:
                for r in out:
                    r.status, r.value = "crashed", self.dead
                return out
            self.queue.extend(out)
            return out

    def collect(self, reply: _Reply) -> None:
        """Read answers in order up to ``reply`` (lock held)."""
        while reply.status is None:
            head = self.queue.pop(0) if self.queue else reply
            if self.dead is not None:
                head.status, head.value = "crashed", self.dead
                continue
            timeout = TIMEOUT_S if head.timeout is None else head.timeout
            try:
                got = _recv(self.proc.stdout.fileno(), time.monotonic() + timeout)
            except TimeoutError:
                self._kill()
                self.dead = (f"{head.title} did not finish within {timeout:g} s on this model and was stopped "
                             "(set QSIM_REFERENCE_TIMEOUT to a number of seconds to allow longer)")
                head.status, head.value = "crashed", self.dead
                continue
            if got is None:  # end of file: the child is gone
                self._died(head.title, head.mark)
                head.status, head.value = "crashed", self.dead
                continue
            head.status, head.value = got

    def _died(self, title: str, mark: int) -> None:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.proc.returncode
        self.dead = f"{title} crashed on this model: {_describe_exit(code)}{self._last_words(mark)}"

    def _last_words(self, mark: int) -> str:
        """The child's last stderr line since ``mark`` (e.g. an abort's reason), as " (...)"."""
        size = os.fstat(self.err.fileno()).st_size
        text = os.pread(self.err.fileno(), min(size - mark, 4096), max(mark, size - 4096)) if size > mark else b""
        lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
        return f" ({lines[-1][:200]})" if lines else ""

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """End the child now (it holds nothing worth keeping: killed, reaped, pipes closed)."""
        if self.owner != os.getpid():
            return
        self.dead = self.dead or "the reference process was stopped"
        self._kill()
        self.outbox.put(None)
        self.writer.join(timeout=5)  # writes to a dead child fail at once; then its fd can be closed
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            try:
                f.close()
            except OSError:
                pass


_child: _Child | None = None
_child_lock = threading.Lock()


def child_for(reference: str) -> _Child:
    """The live child (started now, importing ``reference``'s library first, if there is none or
    the last one died)."""
    return start([reference])


def start(references) -> _Child:
    """Start the child now, if it is not running, so that its imports (the libraries of
    ``references``) overlap with qsim's own work."""
    global _child
    with _child_lock:
        if _child is None or not _child.usable:
            if _child is not None:
                _child.stop()
            _child = _Child(LIBRARY[r] for r in references)
        return _child


@atexit.register
def stop_all() -> None:
    global _child
    with _child_lock:
        if _child is not None:
            _child.stop()
        _child = None


class ChildRunner:
    """``reference`` ("litert", "xnnpack" or "tflm") on ``blob``, hosted by the child process.

    Raises ReferenceRefused (the reference's reason) or ReferenceCrashed (its death) like the
    in-process runners, QsimError when the library is not installed.  ``wait=False`` returns at
    once and reports a refusal at the first ``ready()`` / ``run()`` / ``submit(...).get()``, so
    the caller can work while the child starts.  ``timeout``: seconds per answer (default
    :data:`TIMEOUT_S`)."""

    def __init__(self, reference: str, blob: bytes, arena_size: int | None = None,
                 timeout: float | None = None, wait: bool = True):
        self.reference = reference
        self.title = TITLE[reference]
        self.timeout = timeout
        self.child = child_for(reference)
        self.handle = self.child.new_handle()
        self._opened, = self.child.submit(("open", self.handle, reference, bytes(blob), arena_size),
                                          self.title, timeout)
        if wait:
            self.ready()

    def ready(self) -> None:
        """Wait until the reference has loaded the model (raises its refusal)."""
        self._opened.get()

    def submit(self, input_sets, tensors) -> list[_Reply]:
        """Start one inference per input set (each a list of arrays in graph input order), all in
        one request: the child answers each as soon as it is done, and ``.get()`` on the k-th
        reply gives {index: array} for ``tensors`` of input set k (after a refusal, the remaining
        replies repeat it).  One request instead of one per input spares a loaded machine a
        process hand-over per inference."""
        return self.child.submit(("run", self.handle, [list(a) for a in input_sets], list(tensors)), self.title,
                                 self.timeout, after=self._opened, replies=len(input_sets))

    def run(self, inputs, tensors) -> dict:
        """Set inputs (graph input order), invoke, return {index: array} for ``tensors``."""
        return self.submit([inputs], tensors)[0].get()

    def close(self) -> None:
        """Release the interpreter in the child (also done when this object is garbage collected)."""
        child, self.child = getattr(self, "child", None), None
        if child is not None and child.usable:
            child.to_close.append(self.handle)

    __del__ = close


# ------------------------------------------------------------------ child side

def _import(libraries) -> None:
    """Import the reference libraries (an ImportError surfaces on "open", as a QsimError)."""
    for library in libraries:
        try:
            if library == "litert":
                from ai_edge_litert import interpreter  # noqa: F401
            else:
                from tflite_micro.python.tflite_micro import runtime  # noqa: F401
        except ImportError:
            pass


def main(libraries) -> None:
    """Serve requests on stdin until end of file (see the module docstring); the first of
    ``libraries`` ("litert", "tflm") is imported at once, the others by a thread while the
    first requests are served."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed from here on (Python or C++) lands on stderr, not in the replies
    request_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    refrun.QUIET = False  # keep the libraries' messages: the last one explains a crash
    _import(libraries[:1])  # now, while the parent is busy elsewhere; the others behind the first requests
    threading.Thread(target=_import, args=(libraries[1:],), daemon=True).start()
    runners = {}
    while True:
        msg = _recv(request_fd)
        if msg is None:
            return
        if msg[0] == "close":
            runners.pop(msg[1], None)
            continue
        k = 0
        try:
            if msg[0] == "open":
                _, handle, reference, blob, arena = msg
                runners[handle] = refrun.open_in_process(reference, blob, arena)
                reply = ("ok", None)
            else:
                _, handle, input_sets, tensors = msg
                runner = runners[handle]
                for k, inputs in enumerate(input_sets):
                    value = runner.run(inputs, tensors)
                    _send(reply_fd, ("ok", value), out_of_band=True)
                continue
        except ReferenceRefused as e:
            reply = ("refused", str(e))
        except QsimError as e:
            reply = ("qsim_error", str(e))
        except Exception as e:  # noqa: BLE001 - the library's own complaint, reported as its refusal
            reply = ("refused", f"{type(e).__name__}: {refrun._first_sentence(str(e))}")
        sys.stderr.flush()
        for _ in range(1 if msg[0] == "open" else len(msg[2]) - k):  # a refused run answers for the rest too
            _send(reply_fd, reply)


if __name__ == "__main__":
    main(sys.argv[1:])
