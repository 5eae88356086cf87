"""resolve_device: every spelling of a device either resolves or says what to pass instead."""
from __future__ import annotations

import pytest
import torch

from retcodec.devices import available_devices, resolve_device
from retcodec.errors import ConfigurationError, DeviceError, RetcodecError


@pytest.mark.parametrize("spelling", ["cpu", "CPU", " cpu ", torch.device("cpu"), None])
def test_cpu_spellings(spelling):
    assert resolve_device(spelling) == torch.device("cpu")


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("spelling", ["cuda", "cuda:0", "cuda:3", "GPU", torch.device("cuda")])
def test_cuda_without_cuda(monkeypatch, spelling):
    _no_cuda(monkeypatch)
    with pytest.raises(DeviceError, match="needs a CUDA GPU") as info:
        resolve_device(spelling)
    assert "devices available here: ['cpu']" in str(info.value)
    assert isinstance(info.value, (RetcodecError, ConfigurationError, ValueError))


def test_cuda_index_beyond_the_gpus_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"has 2 CUDA GPU\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


def test_broken_cuda_driver_reads_as_no_cuda(monkeypatch):
    def broken():
        raise RuntimeError("driver too old")
    monkeypatch.setattr(torch.cuda, "is_available", broken)
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_device("cuda")
    assert available_devices()[0] == "cpu"


def test_mps_absent(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps")


@pytest.mark.parametrize("spelling, match", [
    ("cdua", "not a device name"), ("", "empty"), ("cuda:-1", "not a device name"),
    ("cuda:abc", "not a device name"), ("meta", "not one retcodec computes on"),
    ("xla", "not one retcodec computes on"), (0, "must be a string"), (1.5, "must be a string"),
    (["cpu"], "must be a string")])
def test_unknown_devices(spelling, match):
    with pytest.raises(DeviceError, match=match) as info:
        resolve_device(spelling)
    assert "cpu" in str(info.value)


def test_available_devices_lists_the_cpu_first():
    devices = available_devices()
    assert devices[0] == "cpu"
    assert all(resolve_device(d).type in ("cpu", "cuda", "mps") for d in devices)
