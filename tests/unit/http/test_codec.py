import json

from roomkeeper.http.codec import SseCodec


def test_frames_are_one_line_of_json_even_with_unicode_line_separators() -> None:
    data = json.dumps({"text": "a\u2028b\u2029c\u0085d"}, ensure_ascii=False).encode()
    frame = SseCodec(1000).encode(7, "signal", data)
    assert frame.count(b"\n") == 4  # id, event, data, blank: nothing else breaks a line
    decoded = frame.decode()
    assert decoded.splitlines()[3:] == [""]  # a client splitting on U+2028 sees 4 lines too
    payload = decoded.split("data: ", 1)[1].strip()
    assert json.loads(payload) == {"text": "a\u2028b\u2029c\u0085d"}


def test_heartbeat_and_goodbye() -> None:
    codec = SseCodec(1500)
    assert codec.preamble().startswith(b"retry: 1500")
    assert codec.heartbeat(1.5) == ("heartbeat", b'{"ts":1500}')
    assert codec.goodbye() == ("bye", b'{"reason":"shutdown"}')
