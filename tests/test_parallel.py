"""pycaffe_lite.parallel: the thread pool for memory-bound NumPy work."""
import threading

import pytest

from pycaffe_lite import parallel


@pytest.mark.parametrize("n", [1, 2, 5])
def test_every_item_once_with_a_worker_index_per_thread(threads, n):
    threads(n)
    seen, names = [], {}
    lock = threading.Lock()

    def visit(item, worker):
        with lock:
            seen.append(item)
            names.setdefault(worker, set()).add(threading.current_thread().name)
    parallel.for_each(range(23), visit)
    assert sorted(seen) == list(range(23))
    assert set(names) == set(range(n))
    assert all(len(v) == 1 for v in names.values())          # one thread per index
    assert names[0] == {threading.current_thread().name}     # worker 0: the caller


def test_the_first_error_is_raised_after_all_workers_end(threads):
    threads(3)
    done = []

    def visit(item, worker):
        if item == 4:
            raise ValueError("item 4")
        done.append(item)
    with pytest.raises(ValueError, match="item 4"):
        parallel.for_each(range(12), visit)
    # Items are dealt round-robin: the failing worker (items 1, 4, 7, 10) stops, the
    # others finish theirs before the error comes out.
    assert sorted(done) == [0, 1, 2, 3, 5, 6, 8, 9, 11]


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYCAFFE_LITE_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert parallel._default_threads() == 3
    monkeypatch.delenv("PYCAFFE_LITE_NUM_THREADS")
    assert parallel._default_threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert parallel._default_threads() >= 1
    with pytest.raises(ValueError, match="at least 1"):
        parallel.set_num_threads(0)


@pytest.mark.parametrize("n,step,expected", [
    (10, 4, [(0, 4), (4, 8), (8, 10)]), (3, 5, [(0, 3)]), (0, 4, []), (5, 0, [(i, i + 1) for i in range(5)])])
def test_slices_cover_the_range_once(n, step, expected):
    assert [(s.start, s.stop) for s in parallel.slices(n, step)] == expected
