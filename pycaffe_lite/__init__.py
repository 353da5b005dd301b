"""pycaffe_lite: Caffe in pure Python (NumPy on the CPU, CuPy on the GPU)."""
