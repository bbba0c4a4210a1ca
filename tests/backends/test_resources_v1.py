"""Resource settings -> cgroup v1 files (legacy_plan), with systemd.resource-control(5)'s
semantics on the legacy hierarchy; device lookups are stubs, so no kernel is needed."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from backends.resources import (
    CLOSED_DEVICES,
    LEGACY_CONTROLLERS,
    UINT32_MAX,
    UINT64_MAX,
    Totals,
    char_device_number,
    legacy_plan,
    parse_proc_devices,
    proc_device_majors,
)

TOTALS = Totals(memory=8 << 30, tasks=4_194_304)
BLOCK = {"/dev/sda": (8, 0), "/dev/vdb": (254, 16)}
CHAR = {
    "/dev/null": (1, 3),
    "/dev/zero": (1, 5),
    "/dev/full": (1, 7),
    "/dev/random": (1, 8),
    "/dev/urandom": (1, 9),
    "/dev/tty": (5, 0),
    "/dev/ptmx": (5, 2),
    "/dev/nvidia0": (195, 0),
}
PROC_DEVICES = """\
Character devices:
  1 mem
  4 tty
  4 ttyS
  5 /dev/tty
136 pts
195 nvidia-frontend
226 drm

Block devices:
  7 loop
  8 sd
254 virtblk
"""
TABLE = parse_proc_devices(PROC_DEVICES)
CLOSED_LINES = [
    ("devices.allow", "c 1:3 rwm"),
    ("devices.allow", "c 1:5 rwm"),
    ("devices.allow", "c 1:7 rwm"),
    ("devices.allow", "c 1:8 rwm"),
    ("devices.allow", "c 1:9 rwm"),
    ("devices.allow", "c 5:0 rwm"),
    ("devices.allow", "c 5:2 rwm"),
    ("devices.allow", "c 136:* rw"),
]


def majors(kind, pattern):
    return sorted({m for m, name in TABLE[kind] if fnmatch.fnmatchcase(name, pattern)})


def plan(settings):
    return legacy_plan(settings, TOTALS, BLOCK.get, CHAR.get, majors)


def writes(settings):
    return {c: p.writes for c, p in plan(settings).items()}


def notes(settings):
    return [n for p in plan(settings).values() for n in p.notes]


def test_nothing_set_needs_no_controller():
    assert plan({}) == {}
    assert plan({"KillMode": "mixed", "Description": "x", "MemoryAccounting": False}) == {}


def test_memory_limit_and_infinity():
    assert writes({"MemoryMax": 1 << 30}) == {"memory": [("memory.limit_in_bytes", "1073741824")]}
    # cgroup-v1/memory.rst: -1 is unlimited
    assert writes({"MemoryMax": UINT64_MAX}) == {"memory": [("memory.limit_in_bytes", "-1")]}
    assert writes({"MemoryLimit": 4096}) == {"memory": [("memory.limit_in_bytes", "4096")]}
    # MemoryMax= wins over MemoryLimit= (systemd applies MemoryMax= as MemoryLimit= on v1)
    assert writes({"MemoryLimit": 4096, "MemoryMax": 8192}) == {
        "memory": [("memory.limit_in_bytes", "8192")]
    }


def test_memory_scale_is_a_fraction_of_ram():
    ((attr, value),) = writes({"MemoryMaxScale": UINT32_MAX // 2})["memory"]
    assert attr == "memory.limit_in_bytes" and abs(int(value) - (4 << 30)) < 4096
    ((_, value),) = writes({"MemoryLimitScale": UINT32_MAX})["memory"]
    assert int(value) == 8 << 30


def test_unified_only_memory_settings_are_notes_but_realise_memory():
    p = plan({"MemoryLow": 1 << 20, "MemoryHighScale": 5, "MemorySwapMax": 0, "MemoryMin": 1})
    assert list(p) == ["memory"]
    assert p["memory"].writes == []
    assert sorted(p["memory"].notes) == [
        "MemoryHighScale= is not available on cgroup v1, ignored",
        "MemoryLow= is not available on cgroup v1, ignored",
        "MemoryMin= is not available on cgroup v1, ignored",
        "MemorySwapMax= is not available on cgroup v1, ignored",
    ]
    assert writes({"MemoryAccounting": True}) == {"memory": []}


def test_cpu_weight_and_shares():
    assert writes({"CPUWeight": 100}) == {"cpu": [("cpu.shares", "1024")]}
    assert writes({"CPUWeight": 1}) == {"cpu": [("cpu.shares", "10")]}
    assert writes({"CPUWeight": 10000}) == {"cpu": [("cpu.shares", "102400")]}
    assert writes({"CPUShares": 2048}) == {"cpu": [("cpu.shares", "2048")]}
    # systemd 252: CPUWeight= wins; UINT64_MAX means unset, and unset means the default
    assert writes({"CPUWeight": 200, "CPUShares": 100}) == {"cpu": [("cpu.shares", "2048")]}
    assert writes({"CPUWeight": UINT64_MAX, "CPUShares": 512}) == {"cpu": [("cpu.shares", "512")]}
    assert writes({"CPUWeight": UINT64_MAX}) == {"cpu": [("cpu.shares", "1024")]}
    assert writes({"CPUShares": UINT64_MAX}) == {"cpu": [("cpu.shares", "1024")]}


def test_cpu_weight_idle_has_no_v1_form():
    p = plan({"CPUWeight": 0})
    assert p["cpu"].writes == [("cpu.shares", "2")]
    assert p["cpu"].notes == ["CPUWeight=idle has no cgroup v1 form, cpu.shares=2"]


def test_cpu_quota():
    # CPUQuota=50%: 50ms per 100ms period; period first (cgroup-v1 sched-bwc.rst)
    assert writes({"CPUQuotaPerSecUSec": 500_000}) == {
        "cpu": [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]
    }
    assert writes({"CPUQuotaPerSecUSec": 200_000, "CPUQuotaPeriodUSec": 10_000}) == {
        "cpu": [("cpu.cfs_period_us", "10000"), ("cpu.cfs_quota_us", "2000")]
    }
    assert writes({"CPUQuotaPerSecUSec": UINT64_MAX}) == {
        "cpu": [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")]
    }
    assert writes({"CPUQuotaPerSecUSec": 2_000_000})["cpu"][1] == ("cpu.cfs_quota_us", "200000")


def test_cpu_quota_period_is_clamped_to_the_kernel_range():
    p = plan({"CPUQuotaPerSecUSec": 1_000_000, "CPUQuotaPeriodUSec": 500})
    assert p["cpu"].writes == [("cpu.cfs_period_us", "1000"), ("cpu.cfs_quota_us", "1000")]
    assert p["cpu"].notes == ["CPUQuotaPeriodUSec=500 clamped to 1000"]
    p = plan({"CPUQuotaPeriodUSec": 5_000_000})
    assert p["cpu"].writes == [("cpu.cfs_period_us", "1000000"), ("cpu.cfs_quota_us", "-1")]


def test_cpu_accounting_is_cpuacct():
    assert writes({"CPUAccounting": True}) == {"cpuacct": []}
    assert writes({"CPUAccounting": True, "CPUShares": 100}) == {
        "cpu": [("cpu.shares", "100")],
        "cpuacct": [],
    }


def test_tasks():
    assert writes({"TasksMax": 512}) == {"pids": [("pids.max", "512")]}
    assert writes({"TasksMax": UINT64_MAX}) == {"pids": [("pids.max", "max")]}
    assert writes({"TasksMaxScale": UINT32_MAX}) == {"pids": [("pids.max", "4194304")]}
    assert writes({"TasksMaxScale": UINT32_MAX // 100}) == {"pids": [("pids.max", "41943")]}
    assert writes({"TasksAccounting": True}) == {"pids": []}


def test_io_settings_become_blkio():
    assert writes(
        {
            "IOWeight": 100,
            "IODeviceWeight": [("/dev/sda", 1)],
            "IOReadBandwidthMax": [("/dev/sda", 1_000_000)],
            "IOWriteBandwidthMax": [("/dev/vdb", UINT64_MAX)],
            "IOReadIOPSMax": [("/dev/sda", 100)],
            "IOWriteIOPSMax": [("/dev/sda", 200)],
        }
    ) == {
        "blkio": [
            ("blkio.weight", "500"),
            ("blkio.weight_device", "8:0 10"),
            ("blkio.throttle.read_bps_device", "8:0 1000000"),
            # cgroup-v1/blkio-controller.rst: 0 removes the limit
            ("blkio.throttle.write_bps_device", "254:16 0"),
            ("blkio.throttle.read_iops_device", "8:0 100"),
            ("blkio.throttle.write_iops_device", "8:0 200"),
        ]
    }
    assert writes({"IOWeight": 10000}) == {"blkio": [("blkio.weight", "1000")]}
    assert writes({"IOWeight": UINT64_MAX}) == {"blkio": [("blkio.weight", "500")]}


def test_blockio_settings():
    assert writes(
        {
            "BlockIOWeight": 700,
            "BlockIODeviceWeight": [("/dev/sda", 300)],
            "BlockIOReadBandwidth": [("/dev/sda", 5000)],
            "BlockIOWriteBandwidth": [("/dev/sda", 6000)],
        }
    ) == {
        "blkio": [
            ("blkio.weight", "700"),
            ("blkio.weight_device", "8:0 300"),
            ("blkio.throttle.read_bps_device", "8:0 5000"),
            ("blkio.throttle.write_bps_device", "8:0 6000"),
        ]
    }
    assert writes({"BlockIOWeight": UINT64_MAX}) == {"blkio": [("blkio.weight", "500")]}


def test_io_wins_over_blockio_and_unknown_devices_are_notes():
    p = plan(
        {
            "IOWeight": 200,
            "BlockIOWeight": 700,
            "IODeviceLatencyTargetUSec": [("/dev/sda", 1000)],
            "IOReadBandwidthMax": [("/dev/nope", 1)],
        }
    )
    assert p["blkio"].writes == [("blkio.weight", "1000")]
    assert p["blkio"].notes == [
        "IOReadBandwidthMax: /dev/nope is not a block device, ignored",
        "IODeviceLatencyTargetUSec= is not available on cgroup v1, ignored",
        "BlockIOWeight= ignored: IO*= settings take precedence",
    ]
    assert writes({"IOAccounting": True}) == {"blkio": []}
    assert writes({"BlockIOAccounting": True}) == {"blkio": []}


def test_cpusets():
    assert writes({"AllowedCPUs": b"\x0f", "AllowedMemoryNodes": b"\x01"}) == {
        "cpuset": [("cpuset.cpus", "0-3"), ("cpuset.mems", "0")]
    }
    # an empty mask (reset) is left to the backend, which copies the parent's value
    assert writes({"AllowedCPUs": b""}) == {"cpuset": []}


def test_device_policy_auto_without_allow_is_unrestricted():
    assert writes({"DevicePolicy": "auto"}) == {"devices": [("devices.allow", "a")]}
    assert writes({"DeviceAllow": []}) == {"devices": [("devices.allow", "a")]}


def test_device_policy_strict_allows_only_the_listed():
    assert writes(
        {"DevicePolicy": "strict", "DeviceAllow": [("/dev/nvidia0", "wr"), ("/dev/sda", "r")]}
    ) == {
        "devices": [
            ("devices.deny", "a"),
            ("devices.allow", "c 195:0 rw"),
            ("devices.allow", "b 8:0 r"),
        ]
    }
    assert writes({"DevicePolicy": "strict"}) == {"devices": [("devices.deny", "a")]}


def test_device_policy_closed_adds_the_pseudo_devices():
    assert writes({"DevicePolicy": "closed"}) == {"devices": [("devices.deny", "a"), *CLOSED_LINES]}
    assert {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"} <= set(
        CLOSED_DEVICES
    )


def test_device_allow_under_auto_behaves_as_closed():
    assert writes({"DeviceAllow": [("/dev/nvidia0", "mrw")]}) == {
        "devices": [("devices.deny", "a"), *CLOSED_LINES, ("devices.allow", "c 195:0 rwm")]
    }


def test_device_groups_from_proc_devices():
    assert writes(
        {
            "DevicePolicy": "strict",
            "DeviceAllow": [("char-pts", "rw"), ("block-loop", "r"), ("char-tty*", "w")],
        }
    ) == {
        "devices": [
            ("devices.deny", "a"),
            ("devices.allow", "c 136:* rw"),
            ("devices.allow", "b 7:* r"),
            ("devices.allow", "c 4:* w"),
        ]
    }


def test_devices_that_do_not_exist_are_notes():
    p = plan({"DevicePolicy": "strict", "DeviceAllow": [("/dev/gone", "r"), ("char-nosuch", "r")]})
    assert p["devices"].writes == [("devices.deny", "a")]
    assert p["devices"].notes == [
        "DeviceAllow: /dev/gone names no device here, ignored",
        "DeviceAllow: char-nosuch names no device here, ignored",
    ]


def test_proc_devices_parsing_and_this_machine():
    assert TABLE["c"][:3] == [(1, "mem"), (4, "tty"), (4, "ttyS")]
    assert (5, "/dev/tty") in TABLE["c"]
    assert TABLE["b"] == [(7, "loop"), (8, "sd"), (254, "virtblk")]
    assert majors("c", "tty*") == [4]
    # proc(5): /proc/devices always lists "mem" as character major 1
    assert proc_device_majors("c", "mem") == [1]
    assert proc_device_majors("c", "no-such-driver") == []
    assert char_device_number("/dev/null") == (1, 3)
    assert char_device_number("/dev") is None
    assert char_device_number("/nonexistent") is None


def test_the_default_lookups_work_on_this_machine():
    p = legacy_plan({"DevicePolicy": "strict", "DeviceAllow": [("/dev/null", "rw")]}, TOTALS)
    assert p["devices"].writes == [("devices.deny", "a"), ("devices.allow", "c 1:3 rw")]


_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "MemoryMax": st.integers(1, UINT64_MAX),
        "MemoryLimitScale": st.integers(1, UINT32_MAX),
        "MemoryLow": st.integers(0, UINT64_MAX),
        "CPUWeight": st.one_of(st.integers(0, 10000), st.just(UINT64_MAX)),
        "CPUShares": st.integers(2, 262144),
        "CPUQuotaPerSecUSec": st.integers(1, UINT64_MAX),
        "CPUQuotaPeriodUSec": st.integers(0, UINT64_MAX),
        "TasksMax": st.integers(1, UINT64_MAX),
        "IOWeight": st.integers(1, 10000),
        "BlockIOWeight": st.integers(10, 1000),
        "IOReadBandwidthMax": st.lists(st.tuples(st.sampled_from(sorted(BLOCK)), st.integers(0))),
        "AllowedCPUs": st.binary(max_size=4),
        "DevicePolicy": st.sampled_from(["auto", "closed", "strict"]),
        "DeviceAllow": st.lists(
            st.tuples(st.sampled_from([*CHAR, *BLOCK, "char-pts"]), st.sampled_from(["r", "rwm"]))
        ),
        "CPUAccounting": st.booleans(),
        "TasksAccounting": st.booleans(),
    },
)


@given(_SETTINGS)
def test_every_write_goes_to_its_own_controller(settings):
    for controller, p in plan(settings).items():
        assert controller in LEGACY_CONTROLLERS
        for attribute, value in p.writes:
            assert attribute.split(".")[0] == controller
            assert value and "\n" not in value
