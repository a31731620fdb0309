"""`infrawatch replay`: loading the real data sets, their payloads, and a replay through a real
Mosquitto (the `stack` fixture) checked by a plain subscriber."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.utils.mqtt import Collector

from infrawatch import core, sim
from infrawatch.cli import main as cli_main
from infrawatch.ingest.replay import ReplayConfig, ReplayError, load, merge, nonempty, replay

# ../shared/data beside the clone (or beside the folder of worktrees the clone is in)
_HERE = Path(__file__).resolve()
DATA = next(
    (p / "shared" / "data" for p in (_HERE.parents[2], _HERE.parents[3]) if (p / "shared" / "data").is_dir()),
    _HERE.parents[2] / "shared" / "data",
)
SETS = {
    "gecco2018_water_quality": "water_quality",
    "battledim2019_ltown": "water_flow",
    "lead1_building_electricity": "energy",
    "nab_realknowncause_traffic": "energy",
}
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


@needs_data
def test_load_one_set_or_a_kind_of_a_folder() -> None:
    [(name, data)] = load(DATA / "lead1_building_electricity")
    assert (name, data.kind) == ("lead1_building_electricity", "energy")
    assert sorted(n for n, _ in load(DATA, "energy")) == [
        "lead1_building_electricity",
        "nab_realknowncause_traffic",
    ]
    with pytest.raises(ReplayError, match="holds several data sets"):
        load(DATA)
    with pytest.raises(ReplayError, match="not energy"):
        load(DATA / "gecco2018_water_quality", "energy")
    with pytest.raises(ReplayError, match="does not exist"):
        load(DATA / "no_such_set")


def test_config_errors() -> None:
    with pytest.raises(ReplayError, match="speed"):
        ReplayConfig(speed=-1)
    with pytest.raises(ReplayError, match="kind"):
        ReplayConfig(kind="steam")


@needs_data
@pytest.mark.parametrize("name", sorted(SETS))
def test_payloads_decode_to_the_data_set(name: str) -> None:
    """What replay publishes decodes to the data set's readings: same sensor, time and values."""
    [(_, data)] = load(DATA / name)
    data = merge([(name, data)], limit=3000)
    data = data.select(nonempty(data))
    payloads, topics = sim.payloads(data, "nested")
    batch = core.decode(payloads, topics)
    assert batch.errors == []
    assert len(batch) == len(data)
    assert set(batch.kind) == {SETS[name]}
    np.testing.assert_array_equal(batch.timestamp_ns, data.timestamp_ns)  # original timestamps kept
    assert list(batch.sensor_id) == list(data.sensor_id)
    for field, values in data.fields.items():
        present = ~np.isnan(values)
        np.testing.assert_array_equal(batch.fields[field][present], values[present])


@needs_data
def test_merged_sets_stay_in_time_order() -> None:
    data = merge(load(DATA, "energy"))
    assert len(data) == sum(len(d) for _, d in load(DATA, "energy"))
    assert np.all(np.diff(data.timestamp_ns) >= 0)
    assert len({s.sensor_id for s in data.sensors}) == len(data.sensors)


@needs_data
def test_replay_through_the_broker(stack: Any) -> None:
    [(name, full)] = load(DATA / "lead1_building_electricity")
    data = merge([(name, full)], limit=400)

    async def main() -> tuple[Any, Collector]:
        async with Collector(stack.settings, "infrawatch/#") as col:
            stats = await replay(
                stack.settings, data, ReplayConfig(speed=0, shift_to_now=False), reload=stack.broker.reload
            )
            await col.wait_for(stats.readings)
            return stats, col

    stats, col = asyncio.run(main())
    assert stats.readings == len(data) == 400
    assert stats.acked == 400
    assert stats.failed == 0
    assert len(col.messages) == 400
    assert {m.qos for m in col.messages} == {1}
    assert {m.topic for m in col.messages} == {
        f"infrawatch/lead/energy/{sid}/telemetry" for sid in set(data.sensor_id)
    }
    batch = core.decode([m.payload for m in col.messages], [m.topic for m in col.messages])
    assert batch.errors == []
    # each sensor's readings arrive in order, with the data set's timestamps and values
    for sid in set(data.sensor_id):
        want = data.select(data.sensor_id == sid)
        mine = np.array(batch.sensor_id) == sid
        np.testing.assert_array_equal(batch.timestamp_ns[mine], want.timestamp_ns)
        np.testing.assert_array_equal(batch.fields["energy_kwh"][mine], want.fields["energy_kwh"])
        assert stats.per_sensor[sid] == len(want)


@needs_data
def test_replay_stops_on_the_event(stack: Any) -> None:
    """Paced replay (GECCO's 1-minute readings at 600x: 10 a second) ended early by `stop`."""
    [(name, full)] = load(DATA / "gecco2018_water_quality")
    data = merge([(name, full)], limit=200)

    async def main() -> tuple[Any, Collector]:
        stop = asyncio.Event()
        async with Collector(stack.settings, "infrawatch/#") as col:
            task = asyncio.create_task(
                replay(stack.settings, data, ReplayConfig(speed=600), stop=stop, reload=stack.broker.reload)
            )
            await col.wait_for(5)
            stop.set()
            stats = await task
            await col.wait_for(stats.readings)
            return stats, col

    stats, col = asyncio.run(main())
    assert 5 <= stats.readings < 200
    assert stats.acked == stats.readings
    assert len(col.messages) == stats.readings


@needs_data
def test_replay_command(
    stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`infrawatch replay PATH --speed 0 --limit N` with the settings from the environment.

    The broker learns the new sensors through `--pid-file` (SIGHUP), as an operator would do it.
    """
    b = stack.settings.broker
    monkeypatch.setenv("INFRAWATCH_BROKER__HOST", b.host)
    monkeypatch.setenv("INFRAWATCH_BROKER__PORT", str(b.port))
    monkeypatch.setenv("INFRAWATCH_BROKER__PASSWORD_FILE", str(b.password_file))
    monkeypatch.setenv("INFRAWATCH_BROKER__ACL_FILE", str(b.acl_file))
    pid_file = stack.broker.run_dir / "test.pid"
    assert stack.broker.proc is not None
    pid_file.write_text(f"{stack.broker.proc.pid}\n")
    rc = cli_main(
        [
            "replay",
            str(DATA / "battledim2019_ltown"),
            "--speed",
            "0",
            "--limit",
            "90",
            "--pid-file",
            str(pid_file),
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "replaying 90 readings of 3 sensors" in err
    assert "done: 90 readings" in err
    assert "acked 90, failures 0" in err


def test_replay_moves_the_data_set_so_its_last_reading_is_now(stack: Any) -> None:
    """By default: old data would be refused by the 7-day raw tier; spacing and values are kept."""
    data = sim.simulate("energy", seed=3, n_sensors=2, days=1)

    async def main() -> tuple[Any, Collector]:
        async with Collector(stack.settings, "infrawatch/#") as col:
            stats = await replay(stack.settings, data, ReplayConfig(speed=0), reload=stack.broker.reload)
            await col.wait_for(stats.readings)
            return stats, col

    before = time.time_ns()
    stats, col = asyncio.run(main())
    assert stats.readings == len(data)
    batch = core.decode([m.payload for m in col.messages], [m.topic for m in col.messages])
    assert batch.errors == []
    order = np.argsort(batch.timestamp_ns, kind="stable")
    shift = np.unique(np.sort(batch.timestamp_ns) - np.sort(data.timestamp_ns))
    assert len(shift) == 1  # one offset for the whole set: spacing kept
    assert before - 10**9 <= int(batch.timestamp_ns[order[-1]]) <= time.time_ns()
    assert data.timestamp_ns[-1] < before - 86_400 * 10**9  # the simulated day was long ago
