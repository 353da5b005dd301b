"""Solvers: Caffe's ``solver.cpp`` + ``sgd_solver.cpp`` (and the other update rules).

API summary (for the CLI, tools and examples built on top)::

    from pycaffe_lite import solvers
    solver = solvers.get_solver("solver.prototxt")    # class picked by `type` (SGD, Nesterov,
                                                      # AdaGrad, RMSProp, AdaDelta, Adam)
    solver = solvers.SGDSolver("solver.prototxt")     # or a given class (pycaffe: type ignored)
    solver = solvers.create_solver(param, ...)        # from a SolverParameter

    Keyword arguments of every constructor (all optional):
      xp=numpy|cupy        where blobs live; default: cupy after caffe.set_mode_gpu(), else
                           cupy when `solver_mode: GPU` and a GPU is usable (no usable GPU:
                           one warning, CPU), else numpy
      action_request=f     f() -> SolverAction.NONE / STOP / SNAPSHOT, polled once per
                           iteration and per test batch (Caffe's SetActionFunction); the
                           function must return a request once (then NONE), as Caffe's
                           SignalHandler does
      progress=None        tqdm bar over iterations on stderr: None = when stderr is a tty
      net_factory=f        f(net_param, phase, xp) -> Net (default: a pycaffe Net)
      path=...             only with a SolverParameter: the file it came from (for the
                           default snapshot_prefix)

    solver.net / solver.test_nets        train net / list of test nets (pycaffe Nets)
    solver.param                         the SolverParameter (upgraded)
    solver.iter                          updates done so far
    solver.step(n)                       n iterations (tests, display, snapshots as Caffe)
    solver.solve(resume_file=None)       train to max_iter, final snapshot, final forward
                                         pass and test, "Optimization Done."
    solver.restore("x.solverstate")      resume (weights, iter, current_step, history)
    solver.snapshot()                    write <prefix>_iter_N.caffemodel + .solverstate
                                         (first removing the .tmp_<pid>@<host>_<prefix>_iter_*
                                         files of writers that are gone)
    solver.test_all() / solver.test(i)   run the test net(s); test() returns
                                         {output name: [mean values]}
    solver.apply_update()                lr policy, clip, normalise, regularise, rule
    solver.add_callback(on_start, on_gradients_ready)
    solver.requested_early_exit          True after a STOP request
    solver.smoothed_loss                 the loss last displayed (float32)
    solver.history                       list of history arrays (solverstate order)
    solver.learning_rate()               lr of the current iteration
    solver.progress / .action_request    settable after construction too
    solver.close()                       stop the Data layers' prefetch threads

    solvers.SolverAction.NONE / STOP / SNAPSHOT
    solvers.SignalHandler(sigint_effect, sighup_effect)   # "stop" / "snapshot" / "none";
        with SignalHandler(...) as h: solver.action_request = h.check   # restores handlers
    solvers.solver_type_list()           registered type strings
    solvers.SolverParamError             a setting that cannot work; its message begins
                                         with the solver file and the field's line
    solvers.learning_rate(param, iter, current_step) -> (rate, current_step)

Log lines are Caffe's ("Iteration N, loss = X", "    Train net output #k: ...",
"Iteration N, lr = R", "Iteration N, Testing net (#0)", "    Test net output #k:
name = v (* w = x loss)", "Snapshotting to binary proto file ...", "Optimization
Done.") on the "pycaffe_lite" logger.
"""
from .lr_policies import LR_POLICIES, learning_rate  # noqa: F401
from .sgd_solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                          NesterovSolver, RMSPropSolver, SGDSolver)
from .signals import SignalHandler  # noqa: F401
from .solver import (Solver, SolverAction, SolverParamError,  # noqa: F401
                     create_solver, get_solver, register_solver, solver_class,
                     solver_type_list)
