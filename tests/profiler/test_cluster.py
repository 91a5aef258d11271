"""Cluster JSON: round trips, and every bad input a user can give becomes one InputError line."""

from __future__ import annotations

import copy
import json

import pytest

from profiler.cluster import Cluster, Device, Host, Interconnect, Link, load_cluster
from profiler.errors import InputError
from profiler.scenarios import SCENARIOS, universities


# -- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_round_trips_through_json(name: str) -> None:
    cluster = SCENARIOS[name].build()
    assert Cluster.from_json(cluster.to_json()) == cluster
    assert Cluster.from_json(json.loads(json.dumps(cluster.to_json()))) == cluster


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_round_trips_through_a_file(name: str, tmp_path) -> None:
    cluster = SCENARIOS[name].build()
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cluster.to_json()))
    assert load_cluster(path) == cluster


def pair_cluster() -> Cluster:
    """Four devices on two hosts described by measured per-pair matrices (no region links)."""
    hosts = tuple(Host(name=f"h{i}", region=f"r{i}", interconnect=Interconnect.PCIE,
                       interconnect_bandwidth_bytes_per_s=16e9, interconnect_latency_s=2e-6,
                       uplink_bandwidth_bytes_per_s=1.25e9) for i in range(2))
    devices = tuple(Device(id=i, gpu="A100-40GB", host=f"h{i // 2}") for i in range(4))
    latency = tuple(tuple(0.0 if i == j else 1e-3 * (1 + i + j) for j in range(4)) for i in range(4))
    bandwidth = tuple(tuple(0.0 if i == j else 1e8 * (1 + i * 4 + j) for j in range(4)) for i in range(4))
    return Cluster(name="measured", devices=devices, hosts=hosts, pair_latency_s=latency,
                   pair_bandwidth_bytes_per_s=bandwidth)


def test_pair_matrix_form_round_trips() -> None:
    cluster = pair_cluster()
    doc = cluster.to_json()
    assert doc["latency_s"][1][2] == pytest.approx(4e-3)
    assert Cluster.from_json(doc) == cluster
    again = Cluster.from_json(json.loads(json.dumps(doc)))
    assert again == cluster
    assert again.pair_bandwidth_bytes_per_s[3][0] == cluster.pair_bandwidth_bytes_per_s[3][0]


def test_region_form_has_no_matrices_in_json() -> None:
    doc = universities().to_json()
    assert doc["schema"] == "cluster/1"
    assert "latency_s" not in doc and "bandwidth_bytes_per_s" not in doc


# -- load_cluster errors ---------------------------------------------------------------------
def base_doc() -> dict:
    return copy.deepcopy(universities().to_json())


def write(tmp_path, doc) -> str:
    path = tmp_path / "cluster.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def load_error(path) -> str:
    with pytest.raises(InputError) as info:
        load_cluster(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def mutate(doc: dict, change) -> dict:
    change(doc)
    return doc


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(doc):
        target = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def _delete(*keys):
    def change(doc):
        target = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def _disconnect(doc):
    doc["links"] = [l for l in doc["links"] if len(set(l["regions"])) == 1]


def _rename_host(doc):
    doc["devices"][5]["host"] = "nowhere"


def _swap_ids(doc):
    doc["devices"][0]["id"], doc["devices"][1]["id"] = 1, 0


def _non_square(doc):
    n = len(doc["devices"])
    doc["latency_s"] = [[0.0] * n for _ in range(n)]
    doc["bandwidth_bytes_per_s"] = [[1e9] * (n - 1) for _ in range(n)]


def _only_latency(doc):
    n = len(doc["devices"])
    doc["latency_s"] = [[0.0] * n for _ in range(n)]


def _only_bandwidth(doc):
    n = len(doc["devices"])
    doc["bandwidth_bytes_per_s"] = [[1e9] * n for _ in range(n)]


BAD_DOCS = {
    # case: (change, words the message must contain)
    "unrelated object": (lambda d: (d.clear(), d.update(x=1)), ["schema"]),
    "wrong schema": (_set("schema", "cluster/99"), ["schema", "cluster/99"]),
    "no schema": (_delete("schema"), ["schema"]),
    "missing devices": (_delete("devices"), ["devices"]),
    "missing host uplink": (_delete("hosts", 0, "uplink_bandwidth_bytes_per_s"), ["uplink_bandwidth_bytes_per_s"]),
    "missing link latency": (_delete("links", 0, "latency_s"), ["latency_s"]),
    "string latency": (_set("links", 0, "latency_s", "0.001"), ["latency_s", "type"]),
    "float device id": (_set("devices", 3, "id", 3.0), ["id", "type"]),
    "bool device id": (_set("devices", 0, "id", False), ["id", "type"]),
    "hosts not a list": (_set("hosts", {}), ["hosts", "type"]),
    "unknown gpu": (_set("devices", 7, "gpu", "V200"), ["V200", "GPU"]),
    "ids out of order": (_swap_ids, ["id", "order"]),
    "unknown host": (_rename_host, ["nowhere"]),
    "zero uplink": (_set("hosts", 2, "uplink_bandwidth_bytes_per_s", 0), ["uplink_bandwidth_bytes_per_s", "positive"]),
    "negative link bandwidth": (_set("links", 2, "bandwidth_bytes_per_s", -1e9), ["bandwidth_bytes_per_s", "positive"]),
    "zero link bandwidth": (_set("links", 0, "bandwidth_bytes_per_s", 0.0), ["bandwidth_bytes_per_s", "positive"]),
    "negative latency": (_set("links", 1, "latency_s", -0.001), ["latency_s", "seconds in [0, 60]"]),
    "absurd latency": (_set("links", 1, "latency_s", 3600.0), ["latency_s", "seconds in [0, 60]"]),
    "absurd bandwidth": (_set("links", 1, "bandwidth_bytes_per_s", 1e-300), ["bandwidth_bytes_per_s", "below 1000 bytes/s"]),
    "bad interconnect": (_set("hosts", 0, "interconnect", "infiniband"), ["interconnect", "infiniband"]),
    "disconnected": (_disconnect, ["disconnected", "ohio", "virginia"]),
    "non-square matrix": (_non_square, ["bandwidth_bytes_per_s", "64x64"]),
    "only latency matrix": (_only_latency, ["both"]),
    "only bandwidth matrix": (_only_bandwidth, ["both"]),
    "link regions not a pair": (_set("links", 0, "regions", ["ohio"]), ["regions"]),
    "link to a region no host is in": (_set("links", 0, "regions", ["ohio", "oregon"]),
                                       ["links[0]", "ohio-oregon", "'oregon'", "no host is in"]),
}


@pytest.mark.parametrize("case", list(BAD_DOCS))
def test_bad_cluster_is_one_line_naming_file_and_problem(case: str, tmp_path) -> None:
    change, words = BAD_DOCS[case]
    path = write(tmp_path, mutate(base_doc(), change))
    message = load_error(path)
    for word in words:
        assert word in message, (case, message)


def test_unreadable_file_missing(tmp_path) -> None:
    path = tmp_path / "absent.json"
    message = load_error(path)
    assert "cannot read" in message


def test_unreadable_file_is_a_directory(tmp_path) -> None:
    message = load_error(tmp_path)
    assert "cannot read" in message


@pytest.mark.parametrize("text", ["{", "", "{'schema': 'cluster/1'}", "[1, 2,]"])
def test_invalid_json(text: str, tmp_path) -> None:
    message = load_error(write(tmp_path, text))
    assert "not valid JSON" in message and "line 1" in message


def test_json_top_level_not_an_object(tmp_path) -> None:
    message = load_error(write(tmp_path, "[1, 2, 3]"))
    assert "object" in message


def test_nan_latency_is_rejected(tmp_path) -> None:
    text = json.dumps(base_doc()).replace('"latency_s": 0.011', '"latency_s": NaN')
    assert "NaN" in text
    message = load_error(write(tmp_path, text))
    assert "latency_s" in message


def test_binary_file_is_an_input_error(tmp_path) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(b"\xff\xfe\x00\x01 not text")
    load_error(path)


@pytest.mark.parametrize("links", [5, None])
def test_links_of_wrong_type_is_an_input_error(links, tmp_path) -> None:
    doc = base_doc()
    doc["links"] = links
    message = load_error(write(tmp_path, doc))
    assert "links" in message


def test_file_is_named_once(tmp_path) -> None:
    doc = base_doc()
    del doc["devices"]
    path = write(tmp_path, doc)
    assert load_error(path).count(path) == 1


# -- constructor checks ----------------------------------------------------------------------
def test_empty_cluster_is_rejected() -> None:
    with pytest.raises(InputError, match="no devices"):
        Cluster(name="empty", devices=(), hosts=())


def test_duplicate_region_pair_is_rejected() -> None:
    link = Link(a="x", b="x", latency_s=0.0, bandwidth_bytes_per_s=1e9)
    host = Host(name="h", region="x", interconnect=Interconnect.NVLINK, interconnect_bandwidth_bytes_per_s=1e9,
                interconnect_latency_s=0.0, uplink_bandwidth_bytes_per_s=1e9)
    with pytest.raises(InputError, match="two links"):
        Cluster(name="c", devices=(Device(id=0, gpu="T4", host="h"),), hosts=(host,), links=(link, link))


def test_lookups() -> None:
    cluster = universities()
    assert cluster.size == 64
    assert cluster.regions == ("ohio", "virginia")
    assert cluster.region_of(0) == "ohio" and cluster.region_of(63) == "virginia"
    assert cluster.link("virginia", "ohio") is cluster.link("ohio", "virginia")
    with pytest.raises(InputError, match="no link"):
        cluster.link("ohio", "mars")


def test_a_link_to_a_region_of_no_host_is_refused_in_the_pair_form_too() -> None:
    cluster = pair_cluster()
    with pytest.raises(InputError, match="names region 'mars', which no host is in"):
        Cluster(name="c", devices=cluster.devices, hosts=cluster.hosts,
                links=(Link(a="mars", b="mars", latency_s=0.0, bandwidth_bytes_per_s=1e9),),
                pair_latency_s=cluster.pair_latency_s, pair_bandwidth_bytes_per_s=cluster.pair_bandwidth_bytes_per_s)


class CountedHosts(tuple):
    """Hosts that count how often they are walked through."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_a_device_s_host_is_looked_up_not_searched_for() -> None:
    import pickle
    from dataclasses import replace

    # A 10,000-host cluster took 28 s to load: every host_of walked all the hosts again.
    n = 200
    hosts = CountedHosts(Host(name=f"h{i}", region=f"r{i % 3}", interconnect=Interconnect.PCIE,
                              interconnect_bandwidth_bytes_per_s=16e9, interconnect_latency_s=2e-6,
                              uplink_bandwidth_bytes_per_s=1.25e9) for i in range(n))
    links = tuple(Link(a=f"r{a}", b=f"r{b}", latency_s=1e-3, bandwidth_bytes_per_s=1e9)
                  for a in range(3) for b in range(a, 3))
    cluster = Cluster(name="wide", devices=tuple(Device(id=i, gpu="T4", host=f"h{i}") for i in range(n)),
                      hosts=hosts, links=links)
    assert [cluster.region_of(d) for d in range(n)] == [f"r{d % 3}" for d in range(n)]
    assert cluster.regions == ("r0", "r1", "r2") and cluster.link("r2", "r0").a == "r0"
    assert CountedHosts.walks < 10, CountedHosts.walks  # not once per device
    # The table is no field a user sees, compares or copies by hand.
    copied = pickle.loads(pickle.dumps(cluster))
    assert copied == cluster and hash(copied) == hash(cluster) and copied.host_of(7) == cluster.host_of(7)
    assert replace(cluster, name="other").host_of(5).name == "h5" and "_hosts_by_name" not in repr(cluster)
