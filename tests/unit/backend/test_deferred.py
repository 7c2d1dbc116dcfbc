"""instances/deferred.py: background jobs that run once, in order per key, and can be drained."""
import threading

from nova_lxd.backend.instances.deferred import Deferred


def test_a_job_runs_in_the_background_once():
    jobs = Deferred('test')
    ran = []
    done = threading.Event()

    def job():
        ran.append(threading.current_thread().name)
        done.set()
    jobs.defer('a', job)
    assert done.wait(10)
    jobs.drain('a')          # already run: not run again
    assert ran == ['test']
    assert not jobs.pending('a')


def test_drain_runs_a_job_not_yet_begun_on_the_caller_or_waits_for_it():
    jobs = Deferred('test')
    gate = threading.Event()
    ran = []
    jobs.defer('blocker', gate.wait)          # the background thread is busy with this
    jobs.defer('a', lambda: ran.append(threading.current_thread().name))
    jobs.drain('a')                           # must not wait for the blocker
    assert ran == [threading.current_thread().name]
    gate.set()
    jobs.drain('blocker')
    assert not jobs.pending('blocker') and not jobs.pending('a')


def test_jobs_of_one_key_run_in_order_and_a_failure_is_contained():
    jobs = Deferred('test')
    order = []

    def boom():
        order.append(1)
        raise RuntimeError('a failing clean-up must not stop the others')
    jobs.defer('k', boom)
    jobs.defer('k', lambda: order.append(2))   # drains the first one before it is queued
    jobs.drain_all()
    assert order == [1, 2]
    assert not jobs.pending('k')


def test_run_now_does_not_queue_behind_a_long_job_and_can_be_drained():
    jobs = Deferred('test')
    gate = threading.Event()
    started = threading.Event()
    jobs.defer('long', gate.wait)               # the queue's thread is busy with this
    release = threading.Event()

    def urgent():
        started.set()
        release.wait(10)
    jobs.run_now('a', urgent)
    assert started.wait(10)                     # began while the long job still runs
    assert jobs.pending('a')
    release.set()
    jobs.drain('a')                             # waits for it on its own thread
    assert not jobs.pending('a')
    gate.set()
    jobs.drain_all()
