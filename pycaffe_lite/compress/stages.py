"""What the compression pipelines share: their error, their state file, progress
bars and peak-memory readings.

Each stage of a pipeline (``compress labelfree``'s five, ``compress qcnn``'s
calibration, one per layer, output) is recorded in ``DIR/state.json`` with
the key of its inputs (a hash of the files, options and earlier stages'
outputs) and the sha256 of every file it wrote; a re-run keeps a stage whose
key is unchanged and whose files are intact.
"""
import gc
import hashlib
import json
import logging
import os

from ..errors import CaffeError
from ..io import files

log = logging.getLogger("pycaffe_lite")

STATE_VERSION = 1


class CompressError(CaffeError):
    pass


def prepare(model, weights, out):
    """Check that the input files exist and make the output folder ``out``."""
    for path, what in ((model, "model"), (weights, "weights")):
        if not os.path.isfile(path):
            raise CompressError(f"{what} file '{path}' does not exist")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise CompressError(f"cannot make the output folder '{out}': {e.strerror}") from None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def key(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class State:
    def __init__(self, out):
        self.path = os.path.join(out, "state.json")
        self.out = out
        self.stages = {}
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    saved = json.load(f)
                if saved.get("version") == STATE_VERSION:
                    self.stages = saved.get("stages", {})
            except (OSError, ValueError):
                log.warning("%s is unreadable; every stage runs again", self.path)

    def fresh(self, stage, key):
        entry = self.stages.get(stage)
        if not entry or entry.get("key") != key:
            return False
        return all(os.path.exists(os.path.join(self.out, name))
                   and sha256_file(os.path.join(self.out, name)) == digest
                   for name, digest in entry["outputs"].items())

    def record(self, stage, key, outputs, info, seconds, peak, peak_reset):
        self.stages[stage] = {
            "key": key, "info": info, "seconds": seconds, "peak_rss_mb": peak,
            "peak_reset_at_start": peak_reset,
            "outputs": {name: sha256_file(os.path.join(self.out, name)) for name in outputs}}
        data = json.dumps({"version": STATE_VERSION, "stages": self.stages}, indent=1)
        files.write_atomic(self.path, data.encode())

    def outputs(self, stage):
        return self.stages[stage]["outputs"]

    def info(self, stage):
        return self.stages[stage]["info"]


def reset_peak():
    """Restart the kernel's peak-RSS count (Linux) at what is resident now (which
    includes what earlier stages left allocated); False where it cannot."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- stage 2: weights -------------------------------------------------------------


def bar(progress, desc, unit="image"):
    """A maker of tqdm bars (``make(total)``) or None."""
    if not progress:
        return None
    from tqdm import tqdm

    def make(total):
        return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    return make
