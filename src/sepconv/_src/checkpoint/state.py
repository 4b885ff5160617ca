"""The ``checkpoint`` text state file (TF's ``CheckpointState`` proto) and path resolution."""
import logging
import os
import re

from .errors import CheckpointError, CheckpointNotFoundError
from .files import _temp_file, index_filename
from .table import v1_checkpoint_files

_log = logging.getLogger(__name__)
_STATE_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _text_unescape(quoted, path):
    """Decodes one C-escaped text-format string literal (as ``text_format`` writes)."""
    quote = quoted[:1]
    if quote not in ("'", '"') or len(quoted) < 2 or quoted[-1] != quote:
        raise CheckpointError("Malformed checkpoint state file %r: expected a quoted string, "
                              "got %s" % (path, quoted))
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt and nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group(0)
            out.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in ("x", "X"):
            digits = re.match(r"[0-9A-Fa-f]{1,2}", body[i + 2:])
            if not digits:
                raise CheckpointError("Malformed escape in checkpoint state file %r" % path)
            out.append(int(digits.group(0), 16))
            i += 2 + len(digits.group(0))
        else:
            raise CheckpointError("Malformed escape in checkpoint state file %r" % path)
    return out.decode("utf-8", errors="surrogateescape")


def _text_escape(value):
    """Quotes a string as protobuf's ``text_format.MessageToString`` does in the protobuf
    that TF 2.21 uses: tab, newline, CR, both quotes and backslash by their C escapes,
    the other ASCII control characters in octal (``\\001``); non-ASCII characters are
    written as UTF-8."""
    return '"' + value.translate(_TEXT_ESCAPES) + '"'


_TEXT_ESCAPES = {i: "\\%03o" % i for i in (*range(32), 127)}
_TEXT_ESCAPES.update({9: r"\t", 10: r"\n", 13: r"\r", 34: r"\"", 39: r"\'", 92: "\\\\"})


class CheckpointState:
    """TF's ``CheckpointState`` proto: the contents of a ``checkpoint`` file.

    Attributes:
        model_checkpoint_path: prefix of the latest checkpoint.
        all_model_checkpoint_paths: prefixes of the kept checkpoints, oldest first.
    """

    def __init__(self, model_checkpoint_path="", all_model_checkpoint_paths=()):
        self.model_checkpoint_path = model_checkpoint_path
        self.all_model_checkpoint_paths = list(all_model_checkpoint_paths)

    def __repr__(self):
        return "CheckpointState(model_checkpoint_path=%r, all_model_checkpoint_paths=%r)" % (
            self.model_checkpoint_path, self.all_model_checkpoint_paths)

    def to_text(self):
        """The text-format serialization, as ``text_format.MessageToString`` writes it."""
        lines = ["model_checkpoint_path: %s\n" % _text_escape(self.model_checkpoint_path)]
        lines += ["all_model_checkpoint_paths: %s\n" % _text_escape(p)
                  for p in self.all_model_checkpoint_paths]
        return "".join(lines)

    @classmethod
    def from_text(cls, text, path="<string>"):
        """Parses the text format; unknown fields (e.g. timestamps) are ignored."""
        state = cls()
        for line in text.split("\n"):  # not splitlines(): a path may hold \x85 or \u2028
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _STATE_LINE.match(line)
            if not match:
                raise CheckpointError("Malformed checkpoint state file %r: %r" % (path, line))
            field, value = match.groups()
            if field == "model_checkpoint_path":
                state.model_checkpoint_path = _text_unescape(value, path)
            elif field == "all_model_checkpoint_paths":
                state.all_model_checkpoint_paths.append(_text_unescape(value, path))
        return state


def _state_filename(checkpoint_dir, latest_filename=None):
    return os.path.join(os.fspath(checkpoint_dir), latest_filename or "checkpoint")


def get_checkpoint_state(checkpoint_dir, latest_filename=None):
    """Reads ``<checkpoint_dir>/checkpoint``; relative paths are joined to the directory.

    Returns:
        A :class:`CheckpointState`, or ``None`` if there is no state file or
        it cannot be read (logged, as TF does).

    Raises:
        CheckpointError: if the file is malformed or names no checkpoint.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    path = _state_filename(checkpoint_dir, latest_filename)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as e:  # e.g. a directory called `checkpoint`: TF logs it and reads no state
        _log.warning("%s: %s; checkpoint ignored", path, e)
        return None
    state = CheckpointState.from_text(text, path)
    if not state.model_checkpoint_path:
        raise CheckpointError("Invalid checkpoint state loaded from " + checkpoint_dir)
    if not os.path.isabs(state.model_checkpoint_path):
        state.model_checkpoint_path = os.path.join(checkpoint_dir, state.model_checkpoint_path)
    state.all_model_checkpoint_paths = [
        p if os.path.isabs(p) else os.path.join(checkpoint_dir, p)
        for p in state.all_model_checkpoint_paths]
    return state


def update_checkpoint_state(save_dir, model_checkpoint_path, all_model_checkpoint_paths=None,
                            latest_filename=None, save_relative_paths=False):
    """Atomically writes ``<save_dir>/checkpoint``, as TF's ``update_checkpoint_state_internal``.

    As TF does: ``model_checkpoint_path`` is appended to
    ``all_model_checkpoint_paths`` unless it is already its last item; with
    ``save_relative_paths`` absolute paths are made relative to ``save_dir``;
    otherwise paths are written as given when ``save_dir`` is absolute, and
    relative to ``save_dir`` when ``save_dir`` and the path are both relative.
    The text is byte-for-byte what TF writes.
    """
    save_dir = os.fspath(save_dir) or "."
    model_checkpoint_path = os.fspath(model_checkpoint_path)
    paths = [os.fspath(p) for p in all_model_checkpoint_paths or []]
    if save_relative_paths:
        def rel_abs(p):
            return os.path.relpath(p, save_dir) if os.path.isabs(p) else p
        model_checkpoint_path = rel_abs(model_checkpoint_path)
        paths = [rel_abs(p) for p in paths]
    if not paths or paths[-1] != model_checkpoint_path:
        paths.append(model_checkpoint_path)
    if not os.path.isabs(save_dir):
        def rel(p):
            return p if os.path.isabs(p) else os.path.relpath(p, save_dir)
        model_checkpoint_path = rel(model_checkpoint_path)
        paths = [rel(p) for p in paths]
    path = _state_filename(save_dir, latest_filename)
    if os.path.normpath(path) == os.path.normpath(os.path.join(save_dir, model_checkpoint_path)):
        raise RuntimeError("Save path '%s' conflicts with path used for checkpoint state.  "
                           "Please use a different save path." % model_checkpoint_path)
    text = CheckpointState(model_checkpoint_path, paths).to_text()
    f, tmp = _temp_file(path)
    try:
        with f:
            f.write(text.encode("utf-8", errors="surrogateescape"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def checkpoint_exists(prefix):
    """Whether a checkpoint exists at ``prefix``: a V2 index, or (as TF counts them) V1 files.

    sepconv reads only V2; reading a V1 checkpoint raises a ``CheckpointError``
    that says how to convert it.
    """
    return os.path.isfile(index_filename(prefix)) or bool(v1_checkpoint_files(prefix))


def latest_checkpoint(checkpoint_dir, latest_filename=None):
    """The prefix named by ``<checkpoint_dir>/checkpoint`` if that checkpoint exists, else ``None``."""
    state = get_checkpoint_state(checkpoint_dir, latest_filename)
    if state and state.model_checkpoint_path and checkpoint_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path
    return None


def resolve_checkpoint_path(ckpt_dir_or_file):
    """A directory resolves to its latest checkpoint; anything else is taken as a prefix.

    Raises:
        CheckpointNotFoundError: if a directory holds no (existing) latest checkpoint.
    """
    path = os.fspath(ckpt_dir_or_file)
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointNotFoundError(
                "Couldn't find 'checkpoint' file or checkpoints in given directory %s" % path)
        return latest
    return path
