import hashlib

from roomkeeper.runtime import ActorId


def test_id_is_sha256_of_namespace_and_name_and_stable() -> None:
    a = ActorId("rooms", "lobby")
    # Pinned: the same name must reach the same actor in every process and version.
    assert a.hex == "8f365b05b1022958b1e485b095ad18478b860d83e834169c789c2ed53222d7e7"
    assert a.hex == hashlib.sha256(b"\x00\x00\x00\x05roomslobby").hexdigest()
    assert a == ActorId("rooms", "lobby")
    assert hash(a) == hash(ActorId("rooms", "lobby"))
    assert a.short == a.hex[:12]
    assert str(a) == f"rooms:{a.short}"


def test_namespace_and_name_boundaries_do_not_collide() -> None:
    assert ActorId("ab", "c") != ActorId("a", "bc")
    assert ActorId("rooms", "x") != ActorId("other", "x")
    assert ActorId("rooms", "é").hex != ActorId("rooms", "e").hex
