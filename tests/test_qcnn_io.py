"""Q-CNN's .bin / .cbn files: a hand-packed case, round trips, its own AlexNet files."""
import numpy
import pytest

from pycaffe_lite.io import qcnn

from conftest import SHARED

BIN_FILES = SHARED / "fixtures" / "qcnn" / "AlexNet" / "Bin.Files" / "bvlc_alexnet_aCaF"


def cbn_bytes(dims, bits, payload):
    header = numpy.array([len(dims), *dims, bits], "<i4").tobytes()
    return header + bytes(payload) + bytes(qcnn.BLOCK - len(payload))


def test_cbn_by_hand(tmp_path):
    # 3 bits, MSB first: 001 010 011 111 -> 0010 1001 1111 0000 = 0x29 0xF0
    path = tmp_path / "a.cbn"
    path.write_bytes(cbn_bytes((2, 2), 3, [0x29, 0xF0]))
    assert qcnn.read_cbn(str(path)).tolist() == [[1, 2], [3, 7]]
    qcnn.write_cbn(tmp_path / "b.cbn", numpy.array([[1, 2], [3, 7]]), 3)
    assert (tmp_path / "b.cbn").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 7, 8, 11, 16])
def test_cbn_round_trip_across_blocks(tmp_path, bits):
    rng = numpy.random.default_rng(bits)
    per_block = qcnn.BLOCK * 8 // bits
    values = rng.integers(0, 1 << bits, size=(3, per_block + 5))     # crosses blocks
    qcnn.write_cbn(tmp_path / "x.cbn", values, bits)
    assert numpy.array_equal(qcnn.read_cbn(str(tmp_path / "x.cbn")), values)


def test_bin_and_errors(tmp_path):
    path = tmp_path / "x.bin"
    data = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    path.write_bytes(numpy.array([2, 2, 3], "<i4").tobytes() + data.tobytes())
    assert numpy.array_equal(qcnn.read_bin(str(path)), data)
    path.write_bytes(numpy.array([2, 2, 3], "<i4").tobytes() + data.tobytes()[:-4])
    with pytest.raises(qcnn.QcnnFileError, match=r"x.bin: dims \[2, 3\] need 24 bytes"):
        qcnn.read_bin(str(path))
    path.write_bytes(numpy.array([99], "<i4").tobytes())
    with pytest.raises(qcnn.QcnnFileError, match="99 dimensions; expected 1 to 8"):
        qcnn.read_bin(str(path))
    with pytest.raises(qcnn.QcnnFileError, match="does not exist"):
        qcnn.read_cbn(str(tmp_path / "none.cbn"))
    bad = tmp_path / "bad.cbn"
    bad.write_bytes(cbn_bytes((10,), 40, []))
    with pytest.raises(qcnn.QcnnFileError, match="40 bits per element; expected 1 to 16"):
        qcnn.read_cbn(str(bad))
    bad.write_bytes(cbn_bytes((10,), 4, [])[:-1])
    with pytest.raises(qcnn.QcnnFileError, match="need 1 blocks of 4096 bytes"):
        qcnn.read_cbn(str(bad))


# (layer file number, codebook shape: subspaces x codewords x sub-dimension,
#  assignment shape, outputs)
ALEXNET = [("01", (1, 128, 8), (96, 11, 11, 1), 96), ("05", (6, 128, 8), (256, 5, 5, 6), 256),
           ("09", (32, 128, 8), (384, 3, 3, 32), 384), ("11", (24, 128, 8), (384, 3, 3, 24), 384),
           ("13", (24, 128, 8), (256, 3, 3, 24), 256), ("19", (1024, 32, 4), (4096, 1024), 4096),
           ("22", (4096, 16, 1), (1000, 4096), 1000)]


@pytest.mark.parametrize("number,codebook,assignment,outputs", ALEXNET)
def test_qcnn_alexnet_files(number, codebook, assignment, outputs):
    if not BIN_FILES.parent.exists():
        pytest.skip(f"test material not found at {BIN_FILES.parent} (set PYCAFFE_LITE_SHARED)")
    ctrd = qcnn.read_bin(f"{BIN_FILES}.ctrdLst.{number}.bin")
    asmt = qcnn.read_cbn(f"{BIN_FILES}.asmtLst.{number}.cbn")
    bias = qcnn.read_bin(f"{BIN_FILES}.biasVec.{number}.bin")
    assert ctrd.shape == codebook and asmt.shape == assignment and bias.shape == (outputs,)
    assert ctrd.dtype == numpy.float32 and numpy.isfinite(ctrd).all()
    # 0-based codeword indices, all of the codebook in use
    assert asmt.min() == 0 and asmt.max() == codebook[1] - 1
