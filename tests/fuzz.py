"""A seeded mutation fuzzer over the files and command lines a Caffe user hands us.

Each case mutates real files (the fixtures' prototxts, caffemodels, mean files,
a solver, LMDB Datums, images and list files, command-line flags), runs what a
user would run on them (``caffe_lite time`` / ``test``, ``Net(...)`` and a
forward, a solver's steps and snapshot, ``convert_imageset``, the upgrade
tools) in a forked child under a memory cap and a timeout, and sorts the
outcome:

* ``ok``: it ran; ``clear``: our error, naming the file, a layer or the flag;
* ``anonymous``: our error, naming none of them;
* ``crash``: any other exception, or a traceback printed by the CLI;
* ``memory``: MemoryError or killed for memory; ``hang``: past the timeout;
* ``silent``: a net ran on mutated weights to NaN or inf outputs without a warning.

    python tests/fuzz.py --cases 10000 --seed 1 [--jobs 2] [--json out.json]
    python tests/fuzz.py --target prototxt --case 17 --seed 1 --show   # one case, in-process

Case ``i`` of target ``t`` draws from ``random.Random(f"{seed}:{t}:{i}")``, so
every case is reproducible on its own.  The suite runs a few dozen per target
(``tests/test_fuzz.py``; ``PYCAFFE_LITE_FUZZ_CASES`` sets how many).
"""
import argparse
import collections
import contextlib
import io
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
TIMEOUT_S = 10
BAD = ("crash", "hang", "memory", "anonymous", "silent")
ADDRESS_CAP = 3 << 30            # the child's address space, as the run
MEMORY_LIMIT = "1536M"           # pycaffe_lite's own guard, well inside the cap

# --- values and operators ---------------------------------------------------------------

NUMBERS = ["0", "-1", "1", "2", "3", "7", "255", "256", "65535", "2147483647", "2147483648",
           "-2147483649", "4294967296", "9223372036854775807", "99999999999",
           "99999999999999999999", "1e30", "-1e30", "1e-45", "nan", "inf", "-inf", "0.5",
           "-0.0", "1000000", "100000"]
STRINGS = ["", ".", "x", "a" * 300, "\\0", "..", "/", "/dev/zero", "/nonexistent/file",
           "conv1", "data", "label", "loss", "Softmax", "ReLU", "\\xff\\xfe", "%s%n"]
WORDS = ["MAX", "AVE", "TEST", "TRAIN", "LMDB", "LEVELDB", "GPU", "CPU", "SUM", "PROD",
         "xavier", "msra", "gaussian", "constant", "uniform", "bogus", "true", "false"]
NUM_TOKEN = re.compile(r"(?<=:\s)-?[\d.]+(?:e-?\d+)?|(?<=dim:\s)\d+")
STR_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"')
WORD_TOKEN = re.compile(r"(?<=:\s)[A-Za-z_]+\b")


def mutate_text(rng, text):
    """One to three edits of a text file: a number, a string or an enum word replaced
    by a hostile one, a line deleted, doubled or moved, junk inserted, a cut."""
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["num", "num", "num", "str", "word", "del", "dup", "swap",
                         "junk", "cut"])
        lines = text.split("\n")
        if op in ("num", "str", "word"):
            pattern, pool = {"num": (NUM_TOKEN, NUMBERS), "str": (STR_TOKEN, STRINGS),
                             "word": (WORD_TOKEN, WORDS)}[op]
            spots = list(pattern.finditer(text))
            if spots:
                m = rng.choice(spots)
                new = rng.choice(pool)
                new = f'"{new}"' if op == "str" else new
                text = text[:m.start()] + new + text[m.end():]
        elif op == "del" and len(lines) > 1:
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif op == "dup":
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == "swap" and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "junk":
            at = rng.randrange(len(text) + 1)
            junk = rng.choice(["{", "}", ":", "\x00", "layer {", "#", "\\", "\xff", " 1e999 "])
            text = text[:at] + junk + text[at:]
        elif op == "cut":
            text = text[:rng.randrange(len(text) + 1)]
    return text


def mutate_bytes(rng, data):
    """Bit flips, bytes set to 0 / 0xff, a cut, a doubled or inserted chunk."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "flip", "set", "cut", "dup", "insert"])
        if not data:
            data += bytes([rng.randrange(256)])
        i = rng.randrange(len(data))
        if op == "flip":
            data[i] ^= 1 << rng.randrange(8)
        elif op == "set":
            data[i] = rng.choice([0, 0xff, 0x80, 0x7f])
        elif op == "cut":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i:i + rng.randint(1, 64)]
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def layer_names(text):
    return set(re.findall(r'name:\s*"([^"]+)"', text))


# --- the files the targets start from ---------------------------------------------------

SMALL_NETS = [  # (fixture path, weights or None): nets whose forward takes milliseconds
    ("models/lenet_mnist/lenet.prototxt", "models/lenet_mnist/lenet_iter_10000.caffemodel"),
    ("models/cifar10_quick_v1/cifar10_quick_deploy_bvlc_v2.prototxt",
     "models/cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel"),
    ("bvlc/mnist_input_shape_form.prototxt", None),
    ("models/mtcnn_prelu/det1.prototxt", "models/mtcnn_prelu/det1.caffemodel"),
    ("models/mtcnn_prelu/det2.prototxt", "models/mtcnn_prelu/det2.caffemodel"),
    ("bvlc/history_v0_20833e05c/lenet.prototxt", None),
]
BIG_NETS = [  # parsed, upgraded and written only (their weights take seconds to fill)
    "hwgq/imagenet/alex-hwgq-2n-clip-step-160k/train_val.prototxt",
    "bvlc/models/bvlc_googlenet/train_val.prototxt",
    "bvlc/history_v0_20833e05c/examples/imagenet/imagenet_train.prototxt",
    "models/retinaface_mnet25_bn/mnet.prototxt",
    "bvlc/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
    "bvlc/examples/siamese/mnist_siamese_train_test.prototxt",
]

DATA_NET = """name: "fuzz_data"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ scale: 0.00390625 {mean} }}
  data_param {{ source: "{source}" batch_size: 2 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

IMAGE_NET = """name: "fuzz_images"
layer {{ name: "images" type: "ImageData" top: "data" top: "label"
  image_data_param {{ source: "{source}" batch_size: 2 new_height: 12 new_width: 12 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.1
stepsize: 2
display: 1
max_iter: 4
snapshot: 2
snapshot_prefix: "snap/fuzz"
type: "SGD"
random_seed: 1
"""


def write_lmdb(path, datums):
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, datum in enumerate(datums):
            txn.put(f"{i:08d}".encode(), datum)
    env.close()


def good_datums(n=8, side=6):
    from pycaffe_lite.proto import caffe_pb2
    rng = random.Random(0)
    out = []
    for i in range(n):
        d = caffe_pb2.Datum(channels=1, height=side, width=side, label=i % 4,
                            data=bytes(rng.randrange(256) for _ in range(side * side)))
        out.append(d.SerializeToString())
    return out


# --- targets: each writes its case into ``work`` and says what to run -------------------

def fixture(rel):
    return FIXTURES / rel


def target_prototxt(rng, work):
    if rng.random() < 0.75:
        rel, _ = rng.choice(SMALL_NETS)
        text = mutate_text(rng, fixture(rel).read_text())
        path = work / "model.prototxt"
        path.write_text(text, errors="surrogateescape")
        return ("cli", ["time", f"--model={path}", "--iterations=1", "--phase=TEST"],
                {path.name} | layer_names(text))
    rel = rng.choice(BIG_NETS)
    text = mutate_text(rng, fixture(rel).read_text())
    path = work / "model.prototxt"
    path.write_text(text, errors="surrogateescape")
    return ("tool", "upgrade_net_proto_text", [str(path), str(work / "out.prototxt")],
            {path.name} | layer_names(text))


def target_caffemodel(rng, work):
    from pycaffe_lite.proto import caffe_pb2
    rel, weights = rng.choice([n for n in SMALL_NETS if n[1]])
    raw = fixture(weights).read_bytes()
    if rng.random() < 0.5:
        raw = mutate_bytes(rng, raw)
    else:
        net = caffe_pb2.NetParameter()
        net.ParseFromString(raw)
        layers = [l for l in list(net.layer) + list(net.layers) if l.blobs]
        layer = rng.choice(layers)
        blob = rng.choice(layer.blobs)
        op = rng.choice(["dim", "dim", "nan", "drop", "extra", "name", "noblobs", "legacy"])
        if op == "dim" and blob.shape.dim:
            blob.shape.dim[rng.randrange(len(blob.shape.dim))] = int(rng.choice(
                ["0", "-1", "1", "2147483648", "99999999999", "9223372036854775807"]))
        elif op == "nan" and blob.data:
            blob.data[rng.randrange(len(blob.data))] = float(rng.choice(["nan", "inf",
                                                                        "-inf"]))
        elif op == "drop":
            del blob.data[rng.randrange(len(blob.data) + 1):]
        elif op == "extra":
            blob.data.extend([0.5] * rng.randint(1, 9))
        elif op == "name":
            layer.name = rng.choice(["", "x" * 200, "conv1", "ip1"])
        elif op == "noblobs":
            del layer.blobs[rng.randrange(len(layer.blobs)):]
        elif op == "legacy":
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = (
                rng.choice([1, -1, 0, 2147483647, -2147483648]) for _ in range(4))
        raw = net.SerializeToString()
    path = work / "weights.caffemodel"
    path.write_bytes(raw)
    model = fixture(rel)
    return ("api_net", str(model), str(path), {path.name} | layer_names(model.read_text()))


def target_binaryproto(rng, work):
    from pycaffe_lite.proto import caffe_pb2
    raw = fixture("data/mnist_mean.binaryproto").read_bytes()
    if rng.random() < 0.5:
        raw = mutate_bytes(rng, raw)
    else:
        blob = caffe_pb2.BlobProto()
        blob.ParseFromString(raw)
        field = rng.choice(["num", "channels", "height", "width", "data"])
        if field == "data":
            del blob.data[rng.randrange(len(blob.data) + 1):]
        else:
            setattr(blob, field, rng.choice([0, -1, 2, 6, 1 << 31 - 1, 99999]))
        raw = blob.SerializeToString()
    mean = work / "mean.binaryproto"
    mean.write_bytes(raw)
    write_lmdb(work / "db", good_datums(side=28))     # the MNIST mean's size
    net = work / "net.prototxt"
    text = DATA_NET.format(source=work / "db", mean=f'mean_file: "{mean}"')
    net.write_text(text)
    return ("cli", ["time", f"--model={net}", "--iterations=1"],
            {mean.name, net.name} | layer_names(text))


def target_solver(rng, work):
    (work / "snap").mkdir()
    write_lmdb(work / "db", good_datums())
    (work / "net.prototxt").write_text(DATA_NET.format(source=work / "db", mean=""))
    text = mutate_text(rng, SOLVER)
    # a prefix out of the case's folder ("/", "..", "/dev/zero") would write snapshots
    # there: kept inside it, as a relative path
    text = re.sub(r'(snapshot_prefix:\s*")(?:/|\.\.)/?', r"\1out_", text)
    path = work / "solver.prototxt"
    path.write_text(text, errors="surrogateescape")
    return ("api_solver", str(path), {path.name, "net.prototxt"} | layer_names(DATA_NET))


def target_datum(rng, work):
    from pycaffe_lite.proto import caffe_pb2
    datums = good_datums()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(datums))
        d = caffe_pb2.Datum()
        try:
            d.ParseFromString(datums[i])
        except Exception:  # noqa: BLE001 - already mangled by an earlier edit
            continue
        op = rng.choice(["shape", "shape", "data", "float", "encoded", "label", "bytes"])
        if op == "shape":
            setattr(d, rng.choice(["channels", "height", "width"]),
                    rng.choice([0, -1, 2, 7, 1 << 30, 2147483647, -2147483648]))
        elif op == "data":
            d.data = d.data[:rng.randrange(len(d.data) + 1)] + b"\0" * rng.randint(0, 3)
        elif op == "float":
            d.ClearField("data")
            d.float_data.extend([float(rng.choice(["nan", "1e30", "0.5"]))] *
                                rng.choice([36, 35, 1]))
        elif op == "encoded":
            d.encoded = True
            d.data = mutate_bytes(rng, fixture("data/cat.jpg").read_bytes()[:2000])
        elif op == "label":
            d.label = rng.choice([-1, 4, 2147483647, -2147483648])
        if op == "bytes":
            datums[i] = mutate_bytes(rng, datums[i])
        else:
            datums[i] = d.SerializeToString()
    write_lmdb(work / "db", datums)
    net = work / "net.prototxt"
    text = DATA_NET.format(source=work / "db", mean="")
    net.write_text(text)
    return ("cli", ["time", f"--model={net}", "--iterations=4"],
            {net.name, "db"} | layer_names(text))


def target_images(rng, work):
    photos = ["data/cat.jpg", "data/banana.png", "data/chicken.jpg"]
    lines = []
    for k in range(3):
        raw = fixture(rng.choice(photos)).read_bytes()
        name = f"im{k}" + rng.choice([".jpg", ".png", ""])
        if rng.random() < 0.6:
            raw = mutate_bytes(rng, raw)
        (work / name).write_bytes(raw)
        lines.append(f"{work / name} {rng.randrange(4)}")
    text = mutate_text(rng, "\n".join(lines) + "\n") if rng.random() < 0.5 else \
        "\n".join(lines) + "\n"
    listing = work / "list.txt"
    listing.write_text(text, errors="surrogateescape")
    names = {listing.name, "im0", "im1", "im2"}
    if rng.random() < 0.3:
        return ("tool", "convert_imageset",
                ["-resize_height=8", "-resize_width=8", "/", str(listing), str(work / "db")],
                names)
    net = work / "net.prototxt"
    net.write_text(IMAGE_NET.format(source=listing))
    return ("cli", ["time", f"--model={net}", "--iterations=2"],
            names | {net.name} | layer_names(IMAGE_NET))


FLAG_VALUES = ["", "0", "-1", "1", "2147483648", "-2147483649", "99999999999", "abc", "\0",
               "/dev/zero", "/nonexistent", "1e9", "TEST", "TRAIN", "all", "0,1", "-0"]


def target_flags(rng, work):
    rel, weights = SMALL_NETS[0]
    model, weights = str(fixture(rel)), str(fixture(weights))
    write_lmdb(work / "db", good_datums())
    (work / "net.prototxt").write_text(DATA_NET.format(source=work / "db", mean=""))
    (work / "solver.prototxt").write_text(SOLVER.replace("max_iter: 4", "max_iter: 2"))
    (work / "snap").mkdir()
    command = rng.choice(["time", "time", "test", "train", "device_query"])
    base = {"time": [f"--model={model}", "--iterations=1"],
            "test": [f"--model={model}", f"--weights={weights}", "--iterations=1"],
            "train": [f"--solver={work / 'solver.prototxt'}"],
            "device_query": []}[command]
    flags = ["model", "weights", "iterations", "phase", "level", "stage", "gpu",
             "batch_size", "synthetic_data", "solver", "snapshot", "sighup_effect",
             "sigint_effect", "minloglevel", "bogus_flag"]
    argv = [command] + base
    for _ in range(rng.randint(1, 3)):
        flag = rng.choice(flags)
        form = rng.choice(["--{}={}", "-{}={}", "--{} {}", "--{}"])
        argv += form.format(flag, rng.choice(FLAG_VALUES)).split(" ", 1) \
            if " " in form else [form.format(flag, rng.choice(FLAG_VALUES))]
    names = set(flags) | {"solver.prototxt", "net.prototxt", Path(model).name,
                          "command", command}
    return ("cli", argv, names)


TARGETS = {"prototxt": target_prototxt, "caffemodel": target_caffemodel,
           "binaryproto": target_binaryproto, "solver": target_solver,
           "datum": target_datum, "images": target_images, "flags": target_flags}


# --- running one case --------------------------------------------------------------------

def names_something(message, names):
    return any(n and n in message for n in names)


def run_case(action):
    """Run the case in this process; returns (outcome, detail)."""
    from pycaffe_lite.errors import CaffeError
    kind = action[0]
    names = action[-1]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = _run(kind, action[1:-1])
    except CaffeError as e:
        text = f"{type(e).__name__}: {e}"
        return ("clear" if names_something(str(e), names) else "anonymous"), text
    except MemoryError as e:
        return "memory", f"MemoryError: {e}"
    except SystemExit as e:                       # argparse usage errors: exit 2
        status = e.code
    except BaseException as e:                    # noqa: BLE001 - this is what we look for
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if "pycaffe_lite" in f.filename or "/layers/" in f.filename), "?")
        return "crash", f"{type(e).__name__} at {where}: {str(e)[:300]}"
    err = stderr.getvalue()
    if "Traceback (most recent call last)" in err or "internal error" in err.lower():
        return "crash", err[-600:]
    if status == "silent":
        return "silent", "non-finite outputs without a warning"
    if status in (0, None):
        return "ok", ""
    lines = [l for l in err.splitlines() if l[:1] in "EF" or "error" in l.lower()]
    text = "\n".join(lines)[-400:] or err[-400:]
    return ("clear" if names_something(err, names) else "anonymous"), text


def _run(kind, args):
    if kind == "call":                            # the harness's own tests
        return args[0]()
    if kind == "cli":
        from pycaffe_lite import cli
        return cli.main(args[0])
    if kind == "tool":
        import importlib
        return importlib.import_module(f"pycaffe_lite.tools.{args[0]}").main(args[1])
    if kind == "api_net":
        import logging

        import numpy
        import pycaffe_lite as caffe
        warnings = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = warnings.append
        logging.getLogger("pycaffe_lite").addHandler(handler)
        try:
            net = caffe.Net(args[0], caffe.TEST, weights=args[1])
            outputs = net.forward()
        finally:
            logging.getLogger("pycaffe_lite").removeHandler(handler)
        if not warnings and not all(numpy.isfinite(v).all() for v in outputs.values()):
            return "silent"           # NaN or inf out, and nobody said a word
        return 0
    if kind == "api_solver":
        import pycaffe_lite as caffe
        os.chdir(Path(args[0]).parent)
        solver = caffe.get_solver(args[0])
        solver.step(2)
        solver.snapshot()
        return 0
    raise ValueError(kind)


def make_case(target, seed, index, work):
    rng = random.Random(f"{seed}:{target}:{index}")
    return TARGETS[target](rng, work)


def child(target, seed, index, write_fd):
    """In a forked child: cap memory, build and run the case, report on the pipe."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_CAP, ADDRESS_CAP))
    os.environ["PYCAFFE_LITE_MEMORY_LIMIT"] = MEMORY_LIMIT
    work = Path(tempfile.mkdtemp(prefix="fuzz_"))
    try:
        os.chdir(work)
        outcome, detail = run_case(make_case(target, seed, index, work))
    except MemoryError:
        outcome, detail = "memory", "MemoryError while making the case"
    except BaseException as e:  # noqa: BLE001
        outcome, detail = "crash", f"harness: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.write(write_fd, json.dumps([outcome, detail]).encode()[:60000])
    os._exit(0)


def warm_up():
    """Import in the parent what the cases use, so that each forked child starts
    with it loaded (a child's own imports would cost it a second or more)."""
    import cv2  # noqa: F401
    import h5py  # noqa: F401
    import lmdb  # noqa: F401
    import pycaffe_lite as caffe
    from pycaffe_lite import cli  # noqa: F401
    from pycaffe_lite.tools import convert_imageset, upgrade_net_proto_text  # noqa: F401
    caffe.layer_type_list()                      # loads every layer module


def fuzz(targets, cases, seed, jobs=2, progress=None):
    """Run ``cases`` cases per target, ``jobs`` children at a time.  Returns a list
    of dicts (target, case, outcome, detail, seconds)."""
    warm_up()
    pending = collections.deque((t, i) for i in range(cases) for t in targets)
    running, results = {}, []
    while pending or running:
        while pending and len(running) < jobs:
            target, index = pending.popleft()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                child(target, seed, index, write_fd)
            os.close(write_fd)
            running[read_fd] = (pid, target, index, time.monotonic(), bytearray())
        ready, _, _ = select.select(list(running), [], [], 0.2)
        now = time.monotonic()
        for fd in list(running):
            pid, target, index, start, buf = running[fd]
            done = False
            if fd in ready:
                chunk = os.read(fd, 65536)
                buf += chunk
                done = not chunk
            if not done and now - start > TIMEOUT_S:
                os.kill(pid, signal.SIGKILL)
                outcome = ["hang", f"no answer after {TIMEOUT_S} s"]
                done, buf = True, bytearray(json.dumps(outcome).encode())
            if not done:
                continue
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            try:
                outcome, detail = json.loads(bytes(buf))
            except ValueError:
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                outcome = "memory" if sig == signal.SIGKILL else "crash"
                detail = f"child died (status {status}, signal {sig})"
            results.append(dict(target=target, case=index, outcome=outcome, detail=detail,
                                seconds=round(now - start, 3)))
            del running[fd]
            if progress:
                progress(results[-1])
    return results


def summary(results):
    table = collections.defaultdict(collections.Counter)
    for r in results:
        table[r["target"]][r["outcome"]] += 1
    return {t: dict(c) for t, c in sorted(table.items())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100,
                        help="cases in all (split evenly over the targets)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--case", type=int, help="run this one case in-process (--show)")
    parser.add_argument("--show", action="store_true", help="print the case's traceback")
    parser.add_argument("--json", help="write every result here")
    args = parser.parse_args(argv)
    targets = args.target or sorted(TARGETS)
    if args.case is not None:
        work = Path(tempfile.mkdtemp(prefix="fuzz_"))
        os.chdir(work)
        os.environ["PYCAFFE_LITE_MEMORY_LIMIT"] = MEMORY_LIMIT
        action = make_case(targets[0], args.seed, args.case, work)
        print("case:", action[:-1])
        if args.show:
            _run(action[0], action[1:-1])
        print(run_case(action))
        return 0
    try:
        from tqdm import tqdm
        bar = tqdm(total=args.cases // len(targets) * len(targets), unit="case")
    except ImportError:
        bar = None
    start = time.time()
    results = fuzz(targets, args.cases // len(targets), args.seed, args.jobs,
                   progress=(lambda r: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    table = summary(results)
    print(json.dumps(table, indent=1))
    print(f"{len(results)} cases in {time.time() - start:.0f} s, seed {args.seed}")
    bad = [r for r in results if r["outcome"] in BAD]
    for r in bad[:40]:
        print(f"{r['outcome']:9} {r['target']}#{r['case']}: {r['detail'][:300]!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(seed=args.seed, summary=table,
                                                   results=results), indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
