"""Worker heartbeats: what a worker process reports about itself, and that it never touches CUDA first."""

import os
import sys

import pytest
import torch

from evaluator import heartbeat
from evaluator.engine.loading import forget_loaded, get_loaded
from evaluator.models import WorkerStatus
from tests.waiting import wait_for


@pytest.fixture(autouse=True)
def nothing_loaded():
    forget_loaded()
    yield
    forget_loaded()


@pytest.mark.django_db
def test_a_beat_records_host_device_memory_and_process():
    heartbeat.beat("gpu0@box")

    status = WorkerStatus.objects.get(hostname="gpu0@box")
    assert status.device == "cpu"
    assert status.memory.startswith("RSS ") and status.memory.endswith(" GiB")
    assert status.pid == os.getpid()
    assert status.loaded_checkpoint == ""


@pytest.mark.django_db
def test_a_beat_names_the_checkpoints_this_process_has_loaded(tiny_model_path):
    first = heartbeat.beat("gpu0@box")
    unchanged = heartbeat.beat("gpu0@box")
    get_loaded(tiny_model_path, device="cpu")
    loaded = heartbeat.beat("gpu0@box")

    assert (first, unchanged, loaded) == (True, False, True)
    shown = WorkerStatus.objects.get(hostname="gpu0@box").loaded_checkpoint
    assert shown == f"{tiny_model_path.resolve()} (fp32, cpu)"


def test_the_heartbeat_never_initialises_cuda():
    assert not torch.cuda.is_initialized()

    assert heartbeat.device_name() == "cpu"
    assert "GPU" not in heartbeat.memory_summary()
    assert not torch.cuda.is_initialized()


def test_resident_memory_is_that_of_this_process():
    assert 10 * 2**20 < heartbeat.resident_bytes() < 64 * 2**30


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_keeps_the_row_fresh_and_stops():
    thread = heartbeat.start("thread@box")
    try:
        first = wait_for(
            lambda: WorkerStatus.objects.filter(hostname="thread@box").first(),
            timeout=10,
            message="the heartbeat thread wrote nothing",
        )
        heartbeat.wake()
        wait_for(
            lambda: WorkerStatus.objects.get(hostname="thread@box").last_seen > first.last_seen,
            timeout=10,
            message="a woken heartbeat did not beat again",
        )
    finally:
        heartbeat.stop()
    assert not thread.is_alive()
    assert heartbeat.start("thread@box") is not thread
    heartbeat.stop()


def test_celery_signals_are_connected_when_the_celery_app_loads():
    from celery import signals

    import config.celery  # noqa: F401

    assert any("heartbeat-init" in str(key) for key, _ in signals.worker_init.receivers)
    assert any("heartbeat-stop" in str(key) for key, _ in signals.worker_process_shutdown.receivers)


def test_on_an_initialised_gpu_the_beat_names_the_card_and_its_memory(monkeypatch):
    """No GPU here: a stand-in for torch.cuda as a GPU worker's child has it after loading a model."""
    from types import SimpleNamespace

    cuda = SimpleNamespace(
        is_initialized=lambda: True,
        current_device=lambda: 0,
        get_device_name=lambda index: "NVIDIA H200",
        get_device_properties=lambda index: SimpleNamespace(total_memory=140 * 2**30),
        memory_reserved=lambda index: 61 * 2**30,
    )
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))

    assert heartbeat.device_name() == "cuda:0 NVIDIA H200"
    assert heartbeat.memory_summary().endswith(", GPU 61.0 GiB of 140.0 GiB")
