"""Caffe's databases (``util/db``): LMDB, and LevelDB when ``plyvel`` is installed.

``open_db`` opens one for reading its records in key order (:class:`DBReader`);
``create_db`` makes a new one (:class:`DBWriter`), removed again if writing
fails.  Records are (key, value) bytes; Caffe's values are serialized Datums.
"""
import os
import shutil
import threading

from ..errors import CaffeError
from ..proto import caffe_pb2
from .files import check_path

LEVELDB, LMDB = caffe_pb2.DataParameter.LEVELDB, caffe_pb2.DataParameter.LMDB
_BACKEND_NAMES = {LEVELDB: "leveldb", LMDB: "lmdb"}


class DBError(CaffeError):
    """A database that cannot be opened, read or created."""


def backend_id(backend):
    """LEVELDB/LMDB from an enum value or a name ('lmdb', 'LevelDB', ...)."""
    if isinstance(backend, str):
        name = backend.strip().lower()
        for key, value in _BACKEND_NAMES.items():
            if value == name:
                return key
        raise DBError(f"unknown database backend '{backend}' (known: lmdb, leveldb)")
    if backend not in _BACKEND_NAMES:
        raise DBError(f"unknown database backend {backend} (known: LEVELDB = 0, LMDB = 1)")
    return backend


def _plyvel(path, what):
    try:
        import plyvel
    except ImportError:
        hint = ""
        if os.path.isfile(os.path.join(path, "data.mdb")):
            hint = "; this path holds an LMDB (data.mdb): use backend: LMDB"
        raise DBError(f"{what} '{path}': the LevelDB backend is not supported (it needs "
                      f"the 'plyvel' package, which is not installed){hint}") from None
    return plyvel


class DBReader:
    """Records of an LMDB (or LevelDB) in key order, opened read-only.

    LMDBs are opened with ``lock=False`` (like Caffe's MDB_NOTLS read-only
    open, and usable on read-only media); nothing may write to it meanwhile.
    """

    def __init__(self, path, backend=LMDB, what="database"):
        self.path = check_path(path, what, DBError)
        self.backend = backend_id(backend)
        self.what = what
        if not os.path.exists(self.path):
            raise DBError(f"{what} '{self.path}' does not exist "
                          f"(backend {_BACKEND_NAMES[self.backend]}; relative paths are "
                          f"relative to the current directory {os.getcwd()})")
        if self.backend == LMDB:
            if not os.path.isdir(self.path):
                raise DBError(f"{what} '{self.path}' is not a directory (an LMDB is a "
                              "directory holding data.mdb)")
            if not os.path.isfile(os.path.join(self.path, "data.mdb")):
                raise DBError(f"{what} '{self.path}' is not an LMDB (no data.mdb in it)")
            self._env = _acquire_lmdb(self.path, what)
        else:
            plyvel = _plyvel(self.path, what)
            try:
                self._env = plyvel.DB(self.path, create_if_missing=False)
            except Exception as e:  # plyvel.Error and IOError
                raise DBError(f"{what} '{self.path}': cannot open the LevelDB: {e}") from None

    def __len__(self):
        if self.backend == LMDB:
            return self._env.stat()["entries"]
        return sum(1 for _ in self._env.iterator(include_value=False))

    def records(self):
        """Yield (key, value) bytes pairs from the first record to the last."""
        if self.backend == LMDB:
            with self._env.begin(buffers=False) as txn:
                yield from txn.cursor()
        else:
            with self._env.iterator() as it:
                yield from it

    def first(self):
        """The first (key, value), or None for an empty database."""
        gen = self.records()
        try:
            return next(gen, None)
        finally:
            gen.close()

    def close(self):
        if self._env is not None:
            if self.backend == LMDB:
                _release_lmdb(self._env)
            else:
                self._env.close()
            self._env = None


# py-lmdb refuses to open one environment twice in a process, so readers of the
# same LMDB (a train and a test Data layer, say) share one read-only handle.
_lmdb_envs = {}                 # real path -> [env, number of readers]
_lmdb_lock = threading.Lock()


def _acquire_lmdb(path, what):
    import lmdb
    key = os.path.realpath(path)
    with _lmdb_lock:
        entry = _lmdb_envs.get(key)
        if entry is None:
            try:
                env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                max_readers=1024, subdir=True)
            except lmdb.Error as e:
                raise DBError(f"{what} '{path}': cannot open the LMDB: {e}") from None
            entry = _lmdb_envs[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_lmdb(env):
    with _lmdb_lock:
        for key, entry in list(_lmdb_envs.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] == 0:
                    del _lmdb_envs[key]
                    env.close()
                return


def open_db(path, backend=LMDB, what="database"):
    """A :class:`DBReader` on an existing database."""
    return DBReader(path, backend, what)


class DBWriter:
    """A new database (Caffe's ``db->Open(path, NEW)``): fails if ``path`` exists.

    ``put`` buffers records and commits every ``commit_every``; the LMDB map
    grows as needed.  ``close()`` commits the rest.  As a context manager it
    closes on success and, when an exception escapes, removes the database
    so that a failed conversion leaves nothing half-written behind.
    """

    def __init__(self, path, backend=LMDB, commit_every=1000):
        self.path = check_path(path, "output database", DBError)
        self.backend = backend_id(backend)
        self.commit_every = commit_every
        self._pending = []
        self.count = 0
        if os.path.exists(self.path):
            raise DBError(f"cannot create database '{self.path}': it already exists "
                          "(remove it first)")
        if self.backend == LMDB:
            import lmdb
            os.mkdir(self.path, 0o744)
            self._map_size = 1 << 26
            self._env = lmdb.open(self.path, map_size=self._map_size, subdir=True,
                                  meminit=False, map_async=True)
        else:
            plyvel = _plyvel(self.path, "output database")
            self._env = plyvel.DB(self.path, create_if_missing=True, error_if_exists=True,
                                  write_buffer_size=268435456)

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._pending.append((key, value))
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self):
        if not self._pending:
            return
        if self.backend == LMDB:
            import lmdb
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        for key, value in self._pending:
                            txn.put(key, value)
                    break
                except lmdb.MapFullError:
                    self._map_size *= 2
                    self._env.set_mapsize(self._map_size)
        else:
            with self._env.write_batch() as batch:
                for key, value in self._pending:
                    batch.put(key, value)
        self.count += len(self._pending)
        self._pending = []

    def close(self):
        if self._env is None:
            return
        self.commit()
        if self.backend == LMDB:
            self._env.sync(True)
        self._env.close()
        self._env = None

    def abort(self):
        """Drop what is not committed and remove the database (a failed conversion)."""
        self._pending = []
        if self._env is not None:
            self._env.close()
            self._env = None
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def create_db(path, backend=LMDB, commit_every=1000):
    """A :class:`DBWriter` on a new database at ``path``."""
    return DBWriter(path, backend, commit_every)
