"""Prometheus text: counters, cumulative histogram buckets, escaped labels."""

from resnets.serve.metrics import Metrics, parse_samples


def test_histogram_buckets_are_cumulative_and_end_at_the_count():
    m = Metrics()
    for seconds in (0.001, 0.02, 0.02, 3.0, 100.0):
        m.observe_request("/v1/classify", 200, seconds)
    s = parse_samples(m.render())
    bucket = 'resnets_request_duration_seconds_bucket{route="/v1/classify",le="%s"}'
    assert s[bucket % "0.005"] == 1
    assert s[bucket % "0.025"] == 3
    assert s[bucket % "5.0"] == 4
    assert s[bucket % "+Inf"] == 5
    assert s['resnets_request_duration_seconds_count{route="/v1/classify"}'] == 5
    assert abs(s['resnets_request_duration_seconds_sum{route="/v1/classify"}'] - 103.041) < 1e-9


def test_labels_are_escaped():
    m = Metrics()
    m.observe_error('/a"b', "x\ny")
    assert 'resnets_errors_total{route="/a\\"b",reason="x\\ny"} 1' in m.render()
