"""Python binding (ctypes) for liblemonpc: fine-tuned game NPCs.

    import lemonpc
    with lemonpc.Model("SmolLM2-135M-Instruct.Q4_1.gguf") as model, \\
         lemonpc.Npc(model, sheet="characters/orlando.md",
                     adapter="orlando.adapter.gguf") as orlando, \\
         orlando.open(player="Mira, a young acolyte", place="the cathedral") as conv:
        reply, info = conv.say("Who are the Unblessed?",
                               on_text=lambda s: print(s, end="", flush=True))

The library is found through LEMONPC_LIB (a path to liblemonpc.so), else
build/liblemonpc.so of the repository this file lies in (LEMONPC_BUILD
names another build folder), else ctypes.util.find_library("lemonpc"); or
call load_library(path) before anything else.

Every C function the binding uses is declared once, in _PROTOTYPES, as the
header spells it: the ctypes signatures are derived from that text, and the
tests compile the same text against include/lemonpc.h, so a changed
signature fails to compile instead of corrupting memory. To bind a new
function, copy its declaration there (adding a new C type to _CTYPES if it
needs one) and wrap it.

Handles are freed by close(), by leaving a `with` block, or when garbage
collected. Closing a parent closes its children first (a model its NPCs, an
NPC its conversations, a world the NPCs living in it), and waits for calls
running on them in other threads (a reply being generated is cancelled
first). A world's file is closed only after every NPC that lived in it is
freed, whatever order the garbage collector or the interpreter's exit takes.
"""
from __future__ import annotations

import codecs
import ctypes
import ctypes.util
import dataclasses
import enum
import functools
import os
import pathlib
import re
import threading
import weakref
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int,
                    c_int64, c_size_t, c_uint, c_uint64, c_void_p)
from typing import Callable, NamedTuple, Optional, Sequence, Union

__all__ = [
    "load_library", "version", "status_name", "Status", "Persona", "Stop", "Sampling",
    "ReplyInfo", "Reply", "Model", "Npc", "Conversation", "LemonpcError",
    "InvalidArgumentError", "OutOfMemoryError", "FileError", "FormatError", "MismatchError",
    "ContextFullError", "CancelledError", "BusyError", "InternalError", "NotFoundError",
    "KvType", "World", "Memory",
]

PathLike = Union[str, bytes, "os.PathLike[str]"]
OnText = Callable[[str], object]

# ---- enums (names and values as in lemonpc.h; the tests check them) ---------


class Status(enum.IntEnum):
    """lemonpc_status (C names: LEMONPC_ + the member's name)."""
    OK = 0
    ERR_INVALID = 1
    ERR_NOMEM = 2
    ERR_IO = 3
    ERR_FORMAT = 4
    ERR_MISMATCH = 5
    ERR_CONTEXT_FULL = 6
    ERR_CANCELLED = 7
    ERR_BUSY = 8
    ERR_INTERNAL = 9
    ERR_NOT_FOUND = 10


class KvType(enum.IntEnum):
    """lemonpc_kv_type: what a conversation's KV cache stores (C names:
    LEMONPC_KV_ + the member's name). DEFAULT is F16."""
    DEFAULT = 0
    F16 = 1
    F32 = 2


class Persona(enum.IntEnum):
    """lemonpc_persona (C names: LEMONPC_PERSONA_ + the member's name)."""
    AUTO = -1
    NONE = 0
    SHORT = 1
    FULL = 2


class Stop(enum.IntEnum):
    """lemonpc_stop (C names: LEMONPC_STOP_ + the member's name)."""
    END = 0
    MAX_TOKENS = 1
    STRING = 2
    CONTEXT_FULL = 3
    CANCELLED = 4


class Check(enum.IntFlag):
    """The reply guard's checks (C names: LEMONPC_CHECK_ + the member's
    name; docs/RUNTIME.md, "The reply guard")."""
    VOICE = 1
    MODERN = 2
    ENDED = 4
    LOOP = 8
    DODGE = 16
    IGNORANCE = 32
    DEFAULT = 15
    ALL = 63


# C prefix of each enum's constants, for the tests.
_ENUMS = {Status: "LEMONPC_", KvType: "LEMONPC_KV_", Persona: "LEMONPC_PERSONA_",
          Stop: "LEMONPC_STOP_", Check: "LEMONPC_CHECK_"}

# ---- structs (the tests check size, alignment and every offset in C) ---------


class _Error(Structure):
    _c_name_ = "lemonpc_error"
    _fields_ = [("code", c_int), ("message", c_char * 1024)]


class _ModelParams(Structure):
    _c_name_ = "lemonpc_model_params"
    _fields_ = [("threads", c_int), ("n_ctx", c_int), ("kv_type", c_int)]


class _Sampling(Structure):
    _c_name_ = "lemonpc_sampling"
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float),
                ("min_p", c_float), ("repeat_penalty", c_float), ("repeat_last_n", c_int),
                ("seed", c_uint64), ("max_tokens", c_int)]


class _Guard(Structure):
    _c_name_ = "lemonpc_guard"
    _fields_ = [("retries", c_int), ("checks", c_uint), ("temperature", c_float),
                ("best_of", c_int)]


class _NpcParams(Structure):
    _c_name_ = "lemonpc_npc_params"
    _fields_ = [("sheet", c_char_p), ("system", c_char_p), ("persona", c_int),
                ("adapter", c_char_p), ("adapter_scale", c_float), ("sampling", _Sampling),
                ("stop", POINTER(c_char_p)), ("n_stop", c_size_t), ("guard", _Guard)]


class _ReplyInfo(Structure):
    _c_name_ = "lemonpc_reply_info"
    _fields_ = [("n_prompt", c_int), ("n_reused", c_int), ("n_generated", c_int),
                ("n_dropped_turns", c_int), ("stop", c_int), ("prompt_seconds", c_double),
                ("first_token_seconds", c_double), ("total_seconds", c_double),
                ("attempts", c_int), ("failed_checks", c_uint), ("relevance", c_double)]


class _Event(Structure):
    _c_name_ = "lemonpc_event"
    _fields_ = [("text", c_char_p), ("place", c_char_p), ("importance", c_int),
                ("witnesses", POINTER(c_char_p)), ("n_witnesses", c_size_t)]


class _Memory(Structure):
    _c_name_ = "lemonpc_memory"
    _fields_ = [("id", c_int64), ("kind", c_char_p), ("text", c_char_p), ("place", c_char_p),
                ("player", c_char_p), ("time", c_double), ("importance", c_int),
                ("witnessed", c_int)]


class _Turn(Structure):
    _c_name_ = "lemonpc_turn"
    _fields_ = [("role", c_char_p), ("text", c_char_p)]


_STRUCTS = [_Error, _ModelParams, _Sampling, _Guard, _NpcParams, _ReplyInfo, _Event, _Memory,
            _Turn]


class _Opaque(Structure):
    pass


class _ModelT(_Opaque):
    pass


class _NpcT(_Opaque):
    pass


class _ConvT(_Opaque):
    pass


class _WorldT(_Opaque):
    pass


# int (*)(void *user, const char *text, size_t len): text as a raw address,
# since it is not NUL-terminated (c_char_p would read past len).
_STREAM_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
# int (*)(void *user, const lemonpc_memory *memory)
_MEMORY_FN = CFUNCTYPE(c_int, c_void_p, POINTER(_Memory))

# Each callback typedef as the binding declares it above, in C (the tests
# check these against the header's typedefs).
_CALLBACKS = {
    "lemonpc_stream_fn": "int (*)(void *, const char *, size_t)",
    "lemonpc_memory_fn": "int (*)(void *, const lemonpc_memory *)",
}

# C type (as normalised by _norm_type) -> ctypes type; None is void.
_CTYPES = {
    "void": None,
    "int": c_int,
    "double": c_double,
    "int64_t": c_int64,
    "int64_t *": POINTER(c_int64),
    "size_t": c_size_t,
    "void *": c_void_p,
    "const char *": c_char_p,
    "const char **": POINTER(c_char_p),
    "char **": POINTER(c_void_p),          # a string to give back to lemonpc_string_free
    "char *": c_void_p,                    # ditto (lemonpc_string_free's argument)
    "lemonpc_status": c_int,
    "lemonpc_error *": POINTER(_Error),
    "lemonpc_model_params": _ModelParams,
    "const lemonpc_model_params *": POINTER(_ModelParams),
    "lemonpc_sampling": _Sampling,
    "const lemonpc_sampling *": POINTER(_Sampling),
    "const char *const *": POINTER(c_char_p),
    "const lemonpc_turn *": POINTER(_Turn),
    "lemonpc_npc_params": _NpcParams,
    "const lemonpc_npc_params *": POINTER(_NpcParams),
    "lemonpc_reply_info *": POINTER(_ReplyInfo),
    "lemonpc_stream_fn": _STREAM_FN,
    "lemonpc_model *": POINTER(_ModelT),
    "const lemonpc_model *": POINTER(_ModelT),
    "lemonpc_npc *": POINTER(_NpcT),
    "const lemonpc_npc *": POINTER(_NpcT),
    "lemonpc_conversation *": POINTER(_ConvT),
    "const lemonpc_conversation *": POINTER(_ConvT),
    "lemonpc_world *": POINTER(_WorldT),
    "const lemonpc_world *": POINTER(_WorldT),
    "const lemonpc_event *": POINTER(_Event),
    "lemonpc_memory_fn": _MEMORY_FN,
}

# Every function the binding calls, declared as in include/lemonpc.h (every
# parameter named). The tests compile this text after #include "lemonpc.h".
_PROTOTYPES = """
const char *lemonpc_status_name(lemonpc_status code);
const char *lemonpc_version(void);

lemonpc_model_params lemonpc_model_default_params(void);
lemonpc_model *lemonpc_model_load(const char *path, const lemonpc_model_params *params,
                                  lemonpc_error *err);
void lemonpc_model_free(lemonpc_model *model);

lemonpc_sampling lemonpc_sampling_defaults(void);
lemonpc_npc_params lemonpc_npc_default_params(void);
lemonpc_npc *lemonpc_npc_load(lemonpc_model *model, const lemonpc_npc_params *params,
                              lemonpc_error *err);
void lemonpc_npc_free(lemonpc_npc *npc);
const char *lemonpc_npc_name(const lemonpc_npc *npc);
const char *lemonpc_npc_warning(const lemonpc_npc *npc);
lemonpc_status lemonpc_npc_prepare(lemonpc_npc *npc, lemonpc_error *err);
int lemonpc_npc_prefix_tokens(const lemonpc_npc *npc);

lemonpc_conversation *lemonpc_conversation_open(lemonpc_npc *npc, const char *player,
                                                const char *place, lemonpc_error *err);
void lemonpc_conversation_close(lemonpc_conversation *conv);
lemonpc_status lemonpc_say(lemonpc_conversation *conv, const char *line,
                           lemonpc_stream_fn on_text, void *user, char **reply,
                           lemonpc_reply_info *info, lemonpc_error *err);
lemonpc_status lemonpc_complete(lemonpc_npc *npc, const char *prompt, lemonpc_stream_fn on_text,
                                void *user, char **reply, lemonpc_reply_info *info,
                                lemonpc_error *err);
lemonpc_status lemonpc_conversation_complete(lemonpc_conversation *conv, const char *prompt,
                                             lemonpc_stream_fn on_text, void *user,
                                             char **reply, lemonpc_reply_info *info,
                                             lemonpc_error *err);
void lemonpc_conversation_cancel(lemonpc_conversation *conv);
lemonpc_status lemonpc_conversation_reset(lemonpc_conversation *conv, lemonpc_error *err);
int lemonpc_conversation_n_turns(const lemonpc_conversation *conv);
const char *lemonpc_conversation_turn(const lemonpc_conversation *conv, int i,
                                      const char **role);
int lemonpc_conversation_n_cached(const lemonpc_conversation *conv);
lemonpc_status lemonpc_conversation_set_turns(lemonpc_conversation *conv,
                                              const lemonpc_turn *turns, size_t n,
                                              lemonpc_error *err);
lemonpc_status lemonpc_conversation_set_sampling(lemonpc_conversation *conv,
                                                 const lemonpc_sampling *sampling,
                                                 const char *const *stop, size_t n_stop,
                                                 lemonpc_error *err);
lemonpc_status lemonpc_conversation_save(lemonpc_conversation *conv, const char *path,
                                         lemonpc_error *err);
lemonpc_conversation *lemonpc_conversation_restore(lemonpc_npc *npc, const char *path,
                                                   lemonpc_error *err);

lemonpc_world *lemonpc_world_open(const char *path, lemonpc_error *err);
void lemonpc_world_close(lemonpc_world *world);
lemonpc_status lemonpc_world_set_time(lemonpc_world *world, double hours, lemonpc_error *err);
double lemonpc_world_time(const lemonpc_world *world);
lemonpc_status lemonpc_world_event(lemonpc_world *world, const lemonpc_event *event,
                                   int64_t *id, lemonpc_error *err);
lemonpc_status lemonpc_world_tell(lemonpc_world *world, int64_t event_id, const char *npc,
                                  lemonpc_error *err);
lemonpc_status lemonpc_world_fact(lemonpc_world *world, const char *npc, const char *player,
                                  const char *text, int importance, lemonpc_error *err);
lemonpc_status lemonpc_world_memories(lemonpc_world *world, const char *npc,
                                      const char *player, lemonpc_memory_fn fn,
                                      void *user, lemonpc_error *err);
lemonpc_status lemonpc_world_forget(lemonpc_world *world, const char *npc,
                                    const char *player, lemonpc_error *err);
lemonpc_status lemonpc_world_save_as(lemonpc_world *world, const char *path,
                                     lemonpc_error *err);
lemonpc_status lemonpc_world_load(lemonpc_world *world, const char *path,
                                  lemonpc_error *err);
lemonpc_status lemonpc_npc_set_world(lemonpc_npc *npc, lemonpc_world *world,
                                     const char *id, int memory_tokens,
                                     lemonpc_error *err);
const char *lemonpc_conversation_memory(const lemonpc_conversation *conv);
lemonpc_status lemonpc_world_save_conversation(lemonpc_conversation *conv,
                                               lemonpc_error *err);
lemonpc_conversation *lemonpc_world_load_conversation(lemonpc_npc *npc,
                                                      const char *player,
                                                      const char *place,
                                                      lemonpc_error *err);

void lemonpc_string_free(char *s);
"""


def _norm_type(t: str) -> str:
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"\s*\*", "*", t)
    return re.sub(r"(?<=\w)\*", " *", t)


def _parse_prototypes(text: str):
    """[(name, restype C, [param C types])] from C declarations."""
    out = []
    for decl in text.split(";"):
        decl = re.sub(r"\s+", " ", decl).strip()
        if not decl:
            continue
        m = re.fullmatch(r"(.+?)\b(lemonpc_\w+)\s*\((.*)\)", decl)
        if not m:
            raise ValueError(f"lemonpc: cannot parse the prototype {decl!r}")
        ret, name, params = m.groups()
        types = []
        if params.strip() != "void":
            for p in params.split(","):
                pm = re.fullmatch(r"(.*[\s*])(\w+)", p.strip())
                if not pm:
                    raise ValueError(f"lemonpc: {name}: name the parameter {p.strip()!r}")
                types.append(_norm_type(pm.group(1)))
        out.append((name, _norm_type(ret), types))
    return out


# ---- the library -----------------------------------------------------------

_lib_lock = threading.Lock()
_lib_handle: Optional[ctypes.CDLL] = None


def _default_library_path() -> str:
    env = os.environ.get("LEMONPC_LIB")
    if env:
        return env
    root = pathlib.Path(__file__).resolve().parents[2]
    built = root / os.environ.get("LEMONPC_BUILD", "build") / "liblemonpc.so"
    if built.exists():
        return str(built)
    found = ctypes.util.find_library("lemonpc")
    if found:
        return found
    raise OSError(f"lemonpc: liblemonpc.so not found: set LEMONPC_LIB, build {built} "
                  "(`make lib`), or install the library")


def load_library(path: Optional[PathLike] = None) -> ctypes.CDLL:
    """Loads liblemonpc (path, else the default search) and declares its
    functions. Called by the first use of the binding; call it first to
    pick the library. Loading a second, different library is an error."""
    global _lib_handle
    with _lib_lock:
        if _lib_handle is not None:
            if path is not None and os.fspath(path) != _lib_handle._name:
                raise RuntimeError(f"lemonpc: {_lib_handle._name} is already loaded")
            return _lib_handle
        lib = ctypes.CDLL(os.fspath(path) if path is not None else _default_library_path())
        for name, ret, params in _parse_prototypes(_PROTOTYPES):
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise OSError(f"lemonpc: {lib._name} has no {name}: an older library?") from None
            try:
                fn.restype = _CTYPES[ret]
                fn.argtypes = [_CTYPES[p] for p in params]
            except KeyError as e:
                raise TypeError(f"lemonpc: {name}: add the C type {e.args[0]!r} to _CTYPES") \
                    from None
        _lib_handle = lib
        return lib


def _lib() -> ctypes.CDLL:
    return _lib_handle if _lib_handle is not None else load_library()


def version() -> str:
    """The library's version string."""
    return _lib().lemonpc_version().decode()


def status_name(code: int) -> str:
    """The library's name for a status code ("invalid argument", ...)."""
    return _lib().lemonpc_status_name(int(code)).decode()


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode("utf-8")


def _path(p: PathLike) -> bytes:
    return os.fsencode(p)


def _dec(b: Optional[bytes]) -> str:
    return "" if b is None else b.decode("utf-8", errors="replace")


# ---- errors ----------------------------------------------------------------


class LemonpcError(Exception):
    """A failed call: .code (Status), .message (the library's, which names
    the file or the setting at fault). A failed reply also has .info."""
    code = Status.ERR_INTERNAL

    def __init__(self, message: str, code: Optional[int] = None,
                 info: Optional["ReplyInfo"] = None):
        super().__init__(message)
        if code is not None:
            self.code = _status(code)
        self.message = message
        self.info = info

    def __str__(self):
        return f"{self.message} ({status_name(self.code)})"


class InvalidArgumentError(LemonpcError):
    code = Status.ERR_INVALID


class OutOfMemoryError(LemonpcError):
    code = Status.ERR_NOMEM


class FileError(LemonpcError):
    code = Status.ERR_IO


class FormatError(LemonpcError):
    code = Status.ERR_FORMAT


class MismatchError(LemonpcError):
    code = Status.ERR_MISMATCH


class ContextFullError(LemonpcError):
    code = Status.ERR_CONTEXT_FULL


class CancelledError(LemonpcError):
    code = Status.ERR_CANCELLED


class BusyError(LemonpcError):
    code = Status.ERR_BUSY


class InternalError(LemonpcError):
    code = Status.ERR_INTERNAL


class NotFoundError(LemonpcError):
    code = Status.ERR_NOT_FOUND


_ERRORS = {c.code: c for c in (InvalidArgumentError, OutOfMemoryError, FileError, FormatError,
                               MismatchError, ContextFullError, CancelledError, BusyError,
                               InternalError, NotFoundError)}


def _status(code: int):
    try:
        return Status(code)
    except ValueError:
        return int(code)


def _raise(code: int, err: _Error, info: Optional["ReplyInfo"] = None):
    msg = _dec(err.message) or status_name(code)
    raise _ERRORS.get(code, LemonpcError)(msg, code, info)


# ---- values ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sampling:
    """lemonpc_sampling. A field left None takes the library's default
    (Sampling.defaults() shows them); temperature <= 0 is greedy."""
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    repeat_penalty: Optional[float] = None
    repeat_last_n: Optional[int] = None
    seed: Optional[int] = None
    max_tokens: Optional[int] = None

    @classmethod
    def defaults(cls) -> "Sampling":
        s = _lib().lemonpc_sampling_defaults()
        # floats as the shortest decimal of their float32 (0.7, not 0.699999988)
        return cls(**{f: float(f"{getattr(s, f):.7g}") if t is c_float else getattr(s, f)
                      for f, t in _Sampling._fields_})

    def _fill(self, s: _Sampling) -> None:
        for f, _ in _Sampling._fields_:
            v = getattr(self, f)
            if v is not None:
                setattr(s, f, v)


@dataclasses.dataclass(frozen=True)
class ReplyInfo:
    """lemonpc_reply_info: how a reply was made."""
    n_prompt: int
    n_reused: int
    n_generated: int
    n_dropped_turns: int
    stop: Union[Stop, int]
    prompt_seconds: float
    first_token_seconds: float
    total_seconds: float
    attempts: int           # replies drawn: 1, or more when the guard drew again
    failed_checks: Check    # what the reply given still fails (Check(0): nothing)
    relevance: float        # per token, log p(reply | line) - log p(reply | no line),
                            # when the guard chose among draws (best_of); else 0

    @classmethod
    def _of(cls, i: _ReplyInfo) -> "ReplyInfo":
        try:
            stop = Stop(i.stop)
        except ValueError:
            stop = i.stop
        return cls(i.n_prompt, i.n_reused, i.n_generated, i.n_dropped_turns, stop,
                   i.prompt_seconds, i.first_token_seconds, i.total_seconds, i.attempts,
                   Check(i.failed_checks), i.relevance)


@dataclasses.dataclass(frozen=True)
class Memory:
    """lemonpc_memory: one thing an NPC knows (World.memories)."""
    id: int
    kind: str               # "event", "said" (the player's words) or "fact"
    text: str
    place: Optional[str]
    player: Optional[str]
    time: float             # game hours
    importance: int         # 1..10
    witnessed: bool         # the NPC saw it (False: it was told or heard it)

    @classmethod
    def _of(cls, m: _Memory) -> "Memory":
        opt = (lambda b: None if b is None else _dec(b))
        return cls(m.id, _dec(m.kind), _dec(m.text), opt(m.place), opt(m.player), m.time,
                   m.importance, bool(m.witnessed))


class Reply(NamedTuple):
    """What say() and complete() return: `text, info = conv.say(...)`."""
    text: str
    info: ReplyInfo


# ---- handles ---------------------------------------------------------------


class _Handle:
    """A library handle: freed once (close(), `with`, or garbage collection),
    after its children, and not while a call on it runs in another thread."""

    def __init__(self, handle, free_fn, parent: Optional["_Handle"]):
        self._h = handle
        self._parent = parent             # keeps the parent alive while this lives
        self._children: "weakref.WeakSet[_Handle]" = weakref.WeakSet()
        self._cond = threading.Condition()
        self._active = 0
        self._closing = False
        self._callers: dict = {}          # thread ident -> calls it is inside
        # at exit, live finalizers run newest first: children before parents
        self._finalizer = weakref.finalize(self, free_fn, handle)
        if parent is not None:
            parent._children.add(self)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _enter(self):
        with self._cond:
            if self._closing or not self._finalizer.alive:
                raise ValueError(f"{type(self).__name__} is closed")
            self._active += 1
            me = threading.get_ident()
            self._callers[me] = self._callers.get(me, 0) + 1
        return self._h

    def _leave(self):
        with self._cond:
            self._active -= 1
            me = threading.get_ident()
            if self._callers[me] == 1:
                del self._callers[me]
            else:
                self._callers[me] -= 1
            self._cond.notify_all()

    def _interrupt(self):
        """Called by close() before waiting for calls in other threads."""

    def _check(self, fn, *args) -> None:
        """fn(handle, *args, &err) inside a call on the handle; raises the
        error of a failed status."""
        err = _Error()
        h = self._enter()
        try:
            code = fn(h, *args, ctypes.byref(err))
        finally:
            self._leave()
        if code != Status.OK:
            _raise(code, err)

    def close(self) -> None:
        """Frees the handle (its children first); waits for calls running on
        it in other threads. Closing twice is harmless."""
        with self._cond:
            if self._closing or not self._finalizer.alive:
                return
            if threading.get_ident() in self._callers:
                raise RuntimeError(f"cannot close a {type(self).__name__} from inside one of "
                                   "its own calls (a stream callback)")
            self._closing = True
        try:
            for child in list(self._children):
                child.close()
            self._interrupt()
            with self._cond:
                while self._active:
                    self._cond.wait()
            self._finalizer()
        finally:
            with self._cond:
                self._closing = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stream_call(fn, args_before, on_text: Optional[OnText]):
    """Calls lemonpc_say/lemonpc_complete(*args_before, stream, NULL, &reply,
    &info, &err) with a Python stream callback; returns a Reply or raises.

    The callback is always installed: Python code runs between tokens, so a
    KeyboardInterrupt (or any exception from on_text) cancels the reply and
    is raised after the call returns."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    raised: list = []

    def stream(_user, text, n):
        try:
            piece = decoder.decode(ctypes.string_at(text, n)) if n else ""
            if on_text is not None and piece:
                return 1 if on_text(piece) else 0
            return 0
        except BaseException as e:   # noqa: B902 - re-raised after the C call
            raised.append(e)
            return 1

    cb = _STREAM_FN(stream)   # alive until the call returns; the library keeps no copy
    out = c_void_p()
    info = _ReplyInfo()
    err = _Error()
    code = fn(*args_before, cb, None, ctypes.byref(out), ctypes.byref(info), ctypes.byref(err))
    text = None
    if out.value:
        try:
            text = ctypes.string_at(out.value).decode("utf-8", errors="replace")
        finally:
            _lib().lemonpc_string_free(out)
    if not raised and code == Status.OK and on_text is not None:
        tail = decoder.decode(b"", final=True)   # empty while pieces are whole characters
        if tail:
            on_text(tail)
    if raised:
        raise raised[0]
    if code != Status.OK:
        _raise(code, err, ReplyInfo._of(info))
    return Reply(text or "", ReplyInfo._of(info))


class Model(_Handle):
    """A base model (GGUF), loaded once and shared by NPCs.
    threads <= 0: all CPUs; n_ctx <= 0: min(2048, the model's); kv_type:
    the KV cache of its conversations (a save restores only into a model
    with the same type)."""

    def __init__(self, path: PathLike, *, threads: int = 0, n_ctx: int = 0,
                 kv_type: Union[KvType, int] = KvType.DEFAULT):
        lib = _lib()
        p = lib.lemonpc_model_default_params()
        p.threads, p.n_ctx, p.kv_type = threads, n_ctx, int(kv_type)
        err = _Error()
        h = lib.lemonpc_model_load(_path(path), ctypes.byref(p), ctypes.byref(err))
        if not h:
            _raise(err.code, err)
        self.path = os.fspath(path)
        super().__init__(h, lib.lemonpc_model_free, None)

    def npc(self, sheet: Optional[PathLike] = None, **kw) -> "Npc":
        """Npc(self, sheet, **kw)."""
        return Npc(self, sheet, **kw)


class Npc(_Handle):
    """A character on a model: a sheet (or a literal system turn), an
    optional LoRA adapter and its sampling. stop: extra strings that end a
    reply. Persona AUTO takes the mode the adapter was trained with.
    guard: the reply guard's retries (0: off), guard_checks its checks: a
    reply failing them is drawn again before it is given (and streamed).
    best_of: the guard draws that many replies and gives, of those passing,
    the one most about the line (1: off)."""

    def __init__(self, model: Model, sheet: Optional[PathLike] = None, *,
                 system: Optional[str] = None, persona: Union[Persona, int] = Persona.AUTO,
                 adapter: Optional[PathLike] = None, adapter_scale: float = 1.0,
                 sampling: Optional[Sampling] = None, stop: Sequence[str] = (),
                 guard: int = 0, guard_checks: Check = Check.DEFAULT, best_of: int = 1):
        lib = _lib()
        p = lib.lemonpc_npc_default_params()
        keep = []   # the bytes the params point to, alive through the call
        if sheet is not None:
            keep.append(_path(sheet))
            p.sheet = keep[-1]
        if system is not None:
            keep.append(_enc(system))
            p.system = keep[-1]
        p.persona = int(persona)
        if adapter is not None:
            keep.append(_path(adapter))
            p.adapter = keep[-1]
        p.adapter_scale = adapter_scale
        p.guard.retries = guard
        p.guard.checks = int(guard_checks)
        p.guard.best_of = best_of
        if sampling is not None:
            sampling._fill(p.sampling)
        if stop:
            if isinstance(stop, str):
                stop = [stop]
            arr = (c_char_p * len(stop))(*[_enc(s) for s in stop])
            keep.append(arr)
            p.stop = ctypes.cast(arr, POINTER(c_char_p))
            p.n_stop = len(stop)
        err = _Error()
        mh = model._enter()
        try:
            h = lib.lemonpc_npc_load(mh, ctypes.byref(p), ctypes.byref(err))
        finally:
            model._leave()
        if not h:
            _raise(err.code, err)
        self.model = model
        self.world: Optional[World] = None   # set_world
        self.world_id: Optional[str] = None  # its name in that world
        self._home: list = [None]            # the _WorldFile it lives in, for _free_npc
        super().__init__(h, functools.partial(_free_npc, self._home), model)

    @property
    def name(self) -> str:
        """The character's name ("" without a sheet)."""
        return self._get(_lib().lemonpc_npc_name)

    @property
    def warning(self) -> str:
        """A warning from loading ("" if none)."""
        return self._get(_lib().lemonpc_npc_warning)

    @property
    def prefix_tokens(self) -> int:
        """Tokens of the shared persona prefix (0 until the first reply)."""
        h = self._enter()
        try:
            return _lib().lemonpc_npc_prefix_tokens(h)
        finally:
            self._leave()

    def _get(self, fn) -> str:
        h = self._enter()
        try:
            return _dec(fn(h))
        finally:
            self._leave()

    def prepare(self) -> None:
        """Evaluates the persona now (during a loading screen) rather than in
        the first reply."""
        self._check(_lib().lemonpc_npc_prepare)

    def set_world(self, world: "World", id: Optional[str] = None,
                  memory_tokens: int = 256) -> None:
        """The NPC lives in world from now on, under id (None: its
        character's name; an NPC without a sheet needs one): its
        conversations with a named player recall its memories within
        memory_tokens (<= 0: 256) and record what the player says. Close
        its conversations first (BusyError otherwise). Closing the world
        closes the NPC."""
        if not isinstance(world, World):
            raise TypeError(f"set_world: a World, not {type(world).__name__}")
        err = _Error()
        wh = world._enter()
        try:
            h = self._enter()
            try:
                world._file.use()
                code = _lib().lemonpc_npc_set_world(h, wh, _enc(id), int(memory_tokens),
                                                    ctypes.byref(err))
                if code != Status.OK:
                    world._file.unuse()
                    _raise(code, err)
                old_file, self._home[0] = self._home[0], world._file
                old_world, self.world = self.world, world
                self.world_id = id if id else _dec(_lib().lemonpc_npc_name(h))
                world._children.add(self)
                if old_world is not None and old_world is not world:
                    old_world._children.discard(self)
                if old_file is not None:
                    old_file.unuse()
            finally:
                self._leave()
        finally:
            world._leave()

    def open(self, player: Optional[str] = None, place: Optional[str] = None) -> "Conversation":
        """A new conversation with a player (who speaks) in a place."""
        return Conversation(self, player, place)

    def load_conversation(self, player: str, place: Optional[str] = None) -> "Conversation":
        """The conversation with player kept in the NPC's world, as it was:
        from its stored state (Conversation.save_to_world) when that covers
        every recorded turn, else rebuilt from the turns (the cache is
        refilled by the next reply). None recorded: NotFoundError."""
        err = _Error()
        h = self._enter()
        try:
            ch = _lib().lemonpc_world_load_conversation(h, _enc(player), _enc(place),
                                                         ctypes.byref(err))
        finally:
            self._leave()
        if not ch:
            _raise(err.code, err)
        return Conversation._wrap(self, ch)

    def restore(self, path: PathLike) -> "Conversation":
        """The conversation saved to path, going on where it was. A save of
        another NPC or model raises MismatchError, a damaged one FormatError."""
        err = _Error()
        h = self._enter()
        try:
            ch = _lib().lemonpc_conversation_restore(h, _path(path), ctypes.byref(err))
        finally:
            self._leave()
        if not ch:
            _raise(err.code, err)
        return Conversation._wrap(self, ch)

    def complete(self, prompt: str, on_text: Optional[OnText] = None) -> Reply:
        """A raw completion of prompt (no persona, no chat template) with the
        NPC's adapter and sampling; streamed and returned as say() does."""
        h = self._enter()
        try:
            return _stream_call(_lib().lemonpc_complete, (h, _enc(prompt)), on_text)
        finally:
            self._leave()


class Conversation(_Handle):
    """One NPC talking with one player: the turns so far and their cache.
    One thread at a time (another gets BusyError), except cancel()."""

    def __init__(self, npc: Npc, player: Optional[str] = None, place: Optional[str] = None):
        err = _Error()
        h = npc._enter()
        try:
            ch = _lib().lemonpc_conversation_open(h, _enc(player), _enc(place), ctypes.byref(err))
        finally:
            npc._leave()
        if not ch:
            _raise(err.code, err)
        self._init(npc, ch)

    @classmethod
    def _wrap(cls, npc: Npc, ch) -> "Conversation":
        self = cls.__new__(cls)
        self._init(npc, ch)
        return self

    def _init(self, npc: Npc, ch) -> None:
        self.npc = npc
        super().__init__(ch, _lib().lemonpc_conversation_close, npc)

    def say(self, line: str, on_text: Optional[OnText] = None) -> Reply:
        """The player says line; returns (reply text, ReplyInfo). on_text(piece)
        gets the reply as it is generated (whole characters); a true return
        cancels it (CancelledError). A failed or cancelled call leaves the
        conversation as it was."""
        h = self._enter()
        try:
            return _stream_call(_lib().lemonpc_say, (h, _enc(line)), on_text)
        finally:
            self._leave()

    def complete(self, prompt: str, on_text: Optional[OnText] = None) -> Reply:
        """A raw completion of prompt (as Npc.complete) in this conversation's
        cache, with its sampling and stop strings; the turns stay as they are."""
        h = self._enter()
        try:
            return _stream_call(_lib().lemonpc_conversation_complete, (h, _enc(prompt)), on_text)
        finally:
            self._leave()

    def set_turns(self, turns) -> None:
        """Replaces the turns with [(role, text)] (role "user" or "assistant"),
        without generating; the cache is reused as far as it still matches."""
        turns = list(turns)
        arr = (_Turn * max(1, len(turns)))()
        keep = []
        for i, (role, text) in enumerate(turns):
            keep += [_enc(role), _enc(text)]
            arr[i].role, arr[i].text = keep[-2], keep[-1]
        err = _Error()
        h = self._enter()
        try:
            code = _lib().lemonpc_conversation_set_turns(h, arr, len(turns), ctypes.byref(err))
        finally:
            self._leave()
        if code != Status.OK:
            _raise(code, err)

    def set_sampling(self, sampling: Optional[Sampling] = None, stop=()) -> None:
        """This conversation's own sampling (None: the NPC's again) and extra
        stop strings, from the next reply on; the draws restart from its seed."""
        sp = None
        if sampling is not None:
            sp = _lib().lemonpc_sampling_defaults()
            sampling._fill(sp)
        stops = [_enc(x) for x in stop]
        arr = (c_char_p * max(1, len(stops)))(*stops)
        err = _Error()
        h = self._enter()
        try:
            code = _lib().lemonpc_conversation_set_sampling(
                h, ctypes.byref(sp) if sp is not None else None, arr, len(stops),
                ctypes.byref(err))
        finally:
            self._leave()
        if code != Status.OK:
            _raise(code, err)

    def cancel(self) -> None:
        """Stops the reply being generated (from any thread); a no-op when
        none is or the conversation is closed."""
        with self._cond:
            if not self._finalizer.alive:
                return
            self._active += 1
        try:
            _lib().lemonpc_conversation_cancel(self._h)
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    _interrupt = cancel

    def reset(self) -> None:
        """Forgets the turns (the persona stays cached)."""
        err = _Error()
        h = self._enter()
        try:
            code = _lib().lemonpc_conversation_reset(h, ctypes.byref(err))
        finally:
            self._leave()
        if code != Status.OK:
            _raise(code, err)

    @property
    def memory(self) -> str:
        """The block the NPC recalled for the last reply ("" if none): the
        lorebook entries and memories it had in mind."""
        h = self._enter()
        try:
            return _dec(_lib().lemonpc_conversation_memory(h))
        finally:
            self._leave()

    def save_to_world(self) -> None:
        """Stores the conversation (turns and cache) in its NPC's world under
        its player, replacing an earlier one (Npc.load_conversation)."""
        self._check(_lib().lemonpc_world_save_conversation)

    def save(self, path: PathLike) -> None:
        """Saves the turns, cache and sampler state to path, atomically."""
        err = _Error()
        h = self._enter()
        try:
            code = _lib().lemonpc_conversation_save(h, _path(path), ctypes.byref(err))
        finally:
            self._leave()
        if code != Status.OK:
            _raise(code, err)

    @property
    def n_turns(self) -> int:
        """Turns so far (a player line and its reply are two)."""
        h = self._enter()
        try:
            return _lib().lemonpc_conversation_n_turns(h)
        finally:
            self._leave()

    @property
    def n_cached(self) -> int:
        """Tokens held in the KV cache."""
        h = self._enter()
        try:
            return _lib().lemonpc_conversation_n_cached(h)
        finally:
            self._leave()

    def turns(self) -> list:
        """[(role, text)]: role "user" or "assistant"."""
        h = self._enter()
        try:
            lib = _lib()
            out = []
            for i in range(lib.lemonpc_conversation_n_turns(h)):
                role = c_char_p()
                text = lib.lemonpc_conversation_turn(h, i, ctypes.byref(role))
                if text is None:
                    break
                out.append((_dec(role.value), _dec(text)))
            return out
        finally:
            self._leave()


# ---- the world's memory ----------------------------------------------------


def _free_npc(home: list, h) -> None:
    """An Npc's finalizer: frees it, then lets go of its world's file."""
    _lib().lemonpc_npc_free(h)
    f, home[0] = home[0], None
    if f is not None:
        f.unuse()


class _WorldFile:
    """The C world behind a World. lemonpc_world_close must come after every
    NPC living in it is freed; World.close() closes those NPCs first, and
    this count keeps the order when the garbage collector or the
    interpreter's exit frees a World before its NPCs."""

    def __init__(self, h):
        self._h = h
        self._lock = threading.Lock()
        self._users = 0          # NPCs living in it
        self._released = False   # the World is closed or collected

    def use(self) -> None:
        with self._lock:
            self._users += 1

    def unuse(self) -> None:
        with self._lock:
            self._users -= 1
            h = self._take()
        if h is not None:
            _lib().lemonpc_world_close(h)

    def release(self, _h=None) -> None:   # the World's finalizer
        with self._lock:
            self._released = True
            h = self._take()
        if h is not None:
            _lib().lemonpc_world_close(h)

    def _take(self):
        if self._released and self._users == 0 and self._h is not None:
            h, self._h = self._h, None
            return h
        return None


def _npc_id(npc: Union[str, "Npc"]) -> Optional[bytes]:
    """An NPC's name in a world: a string as it is, an Npc's world id."""
    if isinstance(npc, Npc):
        return _enc(npc.world_id or npc.name)
    return _enc(npc)


class World(_Handle):
    """A world: what happened and what was said, and who knows it, in one
    SQLite file kept beside the save game (created if missing; a foreign or
    damaged file raises FormatError). The game says what happened, where,
    how important it is (1..10) and who saw it; an NPC knows only what
    reached it. NPCs join it with Npc.set_world; closing the world closes
    them (and their conversations) first.

    NPC arguments are names (a character's name, or the id given to
    set_world) or Npc objects. Every method is thread-safe."""

    def __init__(self, path: PathLike):
        lib = _lib()
        err = _Error()
        h = lib.lemonpc_world_open(_path(path), ctypes.byref(err))
        if not h:
            _raise(err.code, err)
        self.path = os.fspath(path)
        self._file = _WorldFile(h)
        super().__init__(h, self._file.release, None)

    @property
    def time(self) -> float:
        """The game clock in game hours (0 at creation); settable."""
        h = self._enter()
        try:
            return _lib().lemonpc_world_time(h)
        finally:
            self._leave()

    @time.setter
    def time(self, hours: float) -> None:
        self.set_time(hours)

    def set_time(self, hours: float) -> None:
        """Sets the game clock (recency is counted on it)."""
        self._check(_lib().lemonpc_world_set_time, float(hours))

    def event(self, text: str, place: Optional[str] = None, importance: int = 5,
              witnesses: Sequence[Union[str, "Npc"]] = ()) -> int:
        """Records an event at the current game time; only the witnesses
        know of it. Returns its id, for tell()."""
        if isinstance(witnesses, (str, Npc)):
            witnesses = [witnesses]
        names = [_npc_id(w) for w in witnesses]
        ev = _Event(_enc(text), _enc(place), int(importance), None, len(names))
        if names:
            arr = (c_char_p * len(names))(*names)
            ev.witnesses = ctypes.cast(arr, POINTER(c_char_p))
        out = c_int64()
        self._check(_lib().lemonpc_world_event, ctypes.byref(ev), ctypes.byref(out))
        return out.value

    def tell(self, event_id: int, npc: Union[str, "Npc"]) -> None:
        """npc learns of an event it did not see (someone told it). An
        unknown id raises NotFoundError."""
        self._check(_lib().lemonpc_world_tell, int(event_id), _npc_id(npc))

    def fact(self, npc: Union[str, "Npc"], player: Optional[str], text: str,
             importance: int = 5) -> None:
        """A fact npc knows about player (None: a plain fact), written by
        the game: "Mira is the blacksmith's daughter"."""
        self._check(_lib().lemonpc_world_fact, _npc_id(npc), _enc(player), _enc(text),
                    int(importance))

    def memories(self, npc: Union[str, "Npc"], player: Optional[str] = None) -> list:
        """[Memory] npc has (of player, by the name before any comma;
        None: all), oldest first."""
        out: list = []
        raised: list = []

        def each(_user, m):
            try:
                out.append(Memory._of(m.contents))
                return 0
            except BaseException as e:   # noqa: B902 - re-raised after the C call
                raised.append(e)
                return 1

        cb = _MEMORY_FN(each)
        err = _Error()
        h = self._enter()
        try:
            code = _lib().lemonpc_world_memories(h, _npc_id(npc), _enc(player), cb, None,
                                                 ctypes.byref(err))
        finally:
            self._leave()
        if raised:
            raise raised[0]
        if code != Status.OK:
            _raise(code, err)
        return out

    def forget(self, npc: Union[str, "Npc"], player: str) -> None:
        """npc forgets player: what was said, facts about them, their
        conversation."""
        self._check(_lib().lemonpc_world_forget, _npc_id(npc), _enc(player))

    def save_as(self, path: PathLike) -> None:
        """A copy of the whole world into path (a save slot), atomically:
        the file at path is replaced only by a complete, checked copy."""
        self._check(_lib().lemonpc_world_save_as, _path(path))

    def load(self, path: PathLike) -> None:
        """The world becomes the save slot at path (one save_as wrote),
        checked first and copied in one transaction: either the slot or left
        as it was. Open conversations keep their turns; close them for the
        slot's."""
        self._check(_lib().lemonpc_world_load, _path(path))

    def save_conversation(self, conv: "Conversation") -> None:
        """conv.save_to_world(), for a conversation of an NPC of this world."""
        if conv.npc.world is not self:
            raise ValueError("save_conversation: the conversation's NPC does not live in "
                             "this world")
        conv.save_to_world()
