"""``import caffe`` giving pycaffe_lite (pycaffe_lite/alias.py) and ``python -m
pycaffe_lite.run`` (pycaffe_lite/run.py).  Each case runs in a child interpreter:
installing the alias changes ``sys.modules`` for good."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import caffe
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
    import caffe.io, caffe.net_spec
    import pycaffe_lite
    assert caffe is pycaffe_lite and caffe.net_spec is pycaffe_lite.net_spec
    assert caffe_pb2 is pycaffe_lite.proto.caffe_pb2 and caffe.io.Transformer
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=4)
    path = sys.argv[1]
    open(path, "w").write(str(n.to_proto()))
    net = caffe.Net(path, caffe.TEST)
    print("ok", sys.argv[2:], net.blobs["ip"].data.shape)
""")


def _run(args, cwd, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300, check=False)


def test_run_module_runs_an_old_script_unchanged(tmp_path):
    script = tmp_path / "old.py"
    script.write_text(SCRIPT)
    result = _run(["-m", "pycaffe_lite.run", str(script), str(tmp_path / "n.prototxt"),
                   "x", "--flag"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok ['x', '--flag'] (2, 4)" in result.stdout
    assert "'import caffe' gives pycaffe_lite" in result.stderr


def test_install_as_caffe_says_which_caffe_it_shadows(tmp_path):
    real = tmp_path / "site" / "caffe"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    code = ("import logging, sys; logging.basicConfig()\n"
            "import pycaffe_lite; pycaffe_lite.install_as_caffe()\n"
            "import caffe; print(caffe is pycaffe_lite, hasattr(caffe, 'REAL'))")
    env = dict(__import__("os").environ, PYTHONPATH=str(tmp_path / "site"))
    result = _run(["-c", code], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
    assert f"A Caffe is installed at {real / '__init__.py'}" in result.stderr
    assert "'import caffe' now gives pycaffe_lite" in result.stderr


def test_run_module_errors(tmp_path):
    result = _run(["-m", "pycaffe_lite.run", str(tmp_path / "missing.py")], tmp_path)
    assert result.returncode == 2 and "script" in result.stderr and "not found" in result.stderr
    result = _run(["-m", "pycaffe_lite.run"], tmp_path)
    assert result.returncode == 2 and "usage: python -m pycaffe_lite.run" in result.stdout
