from tests.proxy.support import connect, reading
from tests.support.proc import wait_until


def test_a_registered_device_is_published(proxy):
    key, iv = proxy.register("smoke-1")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv, 0) + reading(key, iv, 1))
    got = wait_until(lambda: len(proxy.ingest("smoke-1")) >= 2 and proxy.ingest("smoke-1"), 5)
    print(got)
    sock.close()
    wait_until(lambda: any(e["event"] == "disconnect" for e in proxy.events("smoke-1")), 5)
    print(proxy.events("smoke-1"))
    print(proxy.log())
