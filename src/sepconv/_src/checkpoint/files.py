"""Checkpoint file names, and the temporary files that make writes atomic."""
import os


def index_filename(prefix):
    """``<prefix>.index``."""
    return os.fspath(prefix) + ".index"


def data_filename(prefix, shard=0, num_shards=1):
    """``<prefix>.data-<shard>-of-<num_shards>``, as TF's ``DataFilename``."""
    return "%s.data-%05d-of-%05d" % (os.fspath(prefix), shard, num_shards)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_file(final_path):
    """Opens a new ``<final_path>.<random>.tmp`` for writing (mode 0666 less the umask,
    as a plain ``open`` would give, unlike ``mkstemp``'s 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = "%s.%s.tmp" % (final_path, os.urandom(6).hex())
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), path
    raise FileExistsError("could not create a temporary file next to %r" % final_path)
