from services.proxy.metrics import Metrics
from services.stack.metrics import parse_prometheus


def test_render_is_prometheus_text_that_status_can_read():
    m = Metrics()
    m.connections_total = 3
    m.readings_accepted = 7
    m.rejected["unknown_key"] += 2
    m.observe(m.publish, 0.002)
    values = parse_prometheus(m.render(open_connections=2, devices=1))
    assert values["medsec_proxy_readings_accepted_total"] == 7
    assert values["medsec_proxy_devices_connected"] == 1
    assert values["medsec_proxy_rejected_total"] == 2
    assert values["medsec_proxy_publish_seconds_count"] == 1
