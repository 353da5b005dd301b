PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test test-all proto bench clean

# Installs, then builds the tiny ImageNet- and CIFAR-style LMDBs the HWGQ
# examples train on (from photos the install has; a few seconds, kept once made).
install:
	$(PIP) install -q -e '.[test]'
	$(PYTHON) examples/imagenet/make_tiny_imagenet.py
	$(PYTHON) examples/cifar10/make_tiny_cifar.py

# Installs, then runs the demo on an embedded default (no downloads, no ../shared).
demo: install
	$(PYTHON) examples/demo.py

# The test suite (what .ci/run runs).
test: install
	$(PYTHON) -m pytest -q -m "not slow"

# Everything, including the slow real-model and whole-dataset tests.
test-all: install
	$(PYTHON) -m pytest -q

# Recompile the schema after editing proto/caffe.proto.
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=pycaffe_lite/proto proto/caffe.proto

bench: install
	$(PYTHON) bench/run_all.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
