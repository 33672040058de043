"""Loaders: small files in each documented format (with bad rows) become the expected ClickEvents."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pytest

from models.loaders import FORMATS, load
from schemas.codec import decode_click, encode_click
from schemas.events import ClickEvent

TAOBAO_USERHEAD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "taobao" / "userhead" / "UserBehavior.csv"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _passes_decoder(events):
    for ev in events:
        assert decode_click(encode_click(ev)) == ev


def test_rees46(tmp_path):
    path = _write(tmp_path, "2019-Oct.csv", (
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3\n"
        "2019-10-01 00:00:05 UTC,cart,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,9333dfbd\n"
        "2019-10-01 00:00:09 UTC,remove_from_cart,3900821,2053013552326770905,,aqua,33.20,554748717,9333dfbd\n"
        "2019-10-01 00:01:00 UTC,purchase,3900821,2053013552326770905,,aqua,0,554748717,9333dfbd\n"
        "2019-13-01 00:00:00 UTC,view,1,2,,b,1.0,5,s\n"  # month 13
        "2019-10-01 00:00:00 UTC,click,1,2,,b,1.0,5,s\n"  # unknown type
        "2019-10-01 00:00:00 UTC,view,1,2,,b,abc,5,s\n"  # price
        "2019-10-01 00:00:00 UTC,view,1,2,,b,1.0,,s\n"  # no user
        "2019-10-01 00:00:00 UTC,view,1\n"  # short row
        "\n"
    ))
    res = load(path, "rees46")
    assert res.rows == 9 and len(res.events) == 4 and res.bad_rows == 5
    assert res.reasons == Counter(bad_timestamp=1, unknown_event_type=1, bad_price=1, missing_user=1,
                                  wrong_column_count=1)
    assert res.examples["bad_timestamp"] == 6  # line number in the file, header is line 1
    first = res.events[0]
    assert first == ClickEvent(event_id="rees46:2019-Oct.csv:2", user_id="541312140", ts=1_569_888_000_000,
                               type="product_view", session_id="72d76fde-8bb3", item_id="44600062",
                               category_id="2103807459595387724", price=35.79)
    assert [e.type for e in res.events] == ["product_view", "add_to_cart", "remove_from_cart", "purchase"]
    assert res.events[3].price is None  # price 0 means unknown
    assert res.events[1].ts - first.ts == 5_000
    _passes_decoder(res.events)


def test_retailrocket(tmp_path):
    path = _write(tmp_path, "events.csv", (
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433193500981,121688,transaction,15335,11117\n"
        "notatime,1,view,2,\n"
        "1433221332117,1,like,2,\n"
        "42,1,view,2,\n"  # 1970: outside the contract's time bounds
    ))
    res = load(path, "retailrocket")
    assert [e.type for e in res.events] == ["product_view", "add_to_cart", "purchase"]
    assert res.events[0].ts == 1433221332117 and res.events[0].user_id == "257597"
    assert res.events[2].item_id == "15335" and res.events[2].session_id is None
    assert res.reasons == Counter(bad_timestamp=2, unknown_event_type=1)
    _passes_decoder(res.events)


def test_yoochoose_clicks_and_buys_are_merged(tmp_path):
    clicks = _write(tmp_path, "yoochoose-clicks.dat", (
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"
        "1,2014-04-07T10:54:09.868Z,214536500,0\n"
        "2,2014-04-07T13:56:37.614Z,214662742,S\n"
        "2,2014-04-07T13:57:19.373Z,214825110,0\n"
        "3,yesterday,214536502,0\n"
        "3,2014-04-07T10:51:09.277Z,214536502\n"
    ))
    _write(tmp_path, "yoochoose-buys.dat", (
        "2,2014-04-07T13:57:00.000Z,214662742,1046,2\n"
        "1,2014-04-07T10:55:00.000Z,214536500,0,0\n"
        "4,2014-04-07T10:55:00.000Z,1,12,-3\n"
    ))
    for source in (clicks, tmp_path):  # the clicks file (buys found beside it) or the folder
        res = load(source, "yoochoose")
        assert res.rows == 9 and res.bad_rows == 3
        assert res.reasons == Counter(bad_timestamp=1, wrong_column_count=1, bad_quantity=1)
        assert [e.ts for e in res.events] == sorted(e.ts for e in res.events)
        s2 = [e for e in res.events if e.session_id == "2"]
        assert [e.type for e in s2] == ["product_view", "purchase", "product_view"]
        assert s2[0].category_id == "S" and s2[1].price == 1046.0 and s2[1].quantity == 2
        assert s2[0].user_id == "2"  # no user id in YooChoose: the session stands in
        buy1 = next(e for e in res.events if e.session_id == "1" and e.type == "purchase")
        assert buy1.price is None and buy1.quantity is None and buy1.event_id == "yoochoose-buys:yoochoose-buys.dat:2"
        assert all(e.category_id is None for e in res.events if e.session_id == "1")
        _passes_decoder(res.events)
    streamed = load(clicks, "yoochoose", stream=True)
    got = list(streamed.events)
    assert sorted(got, key=lambda e: e.ts) == res.events
    assert [e.session_id for e in got] == ["1", "1", "1", "2", "2", "2"]  # merged by (session, time)


def test_coveo(tmp_path):
    path = _write(tmp_path, "browsing_train.csv", (
        "session_id_hash,event_type,product_action,product_sku_hash,server_timestamp_epoch_ms,hashed_url\n"
        "00000449,pageview,,,1550885210881,7e4527ac\n"
        "00000449,event_product,detail,a8c4c4b2,1550885213307,8b6a1d36\n"
        "00000449,event_product,add,a8c4c4b2,1550885220000,8b6a1d36\n"
        "00000449,event_product,remove,a8c4c4b2,1550885221000,8b6a1d36\n"
        "00000449,event_product,purchase,a8c4c4b2,1550885230000,8b6a1d36\n"
        "00000449,event_product,click,b1,1550885231000,8b6a1d36\n"
        "00000449,event_product,,a8c4c4b2,1550885232000,8b6a1d36\n"
        "00000449,search,,,1550885233000,x\n"
        ",pageview,,,1550885233000,x\n"
    ))
    res = load(path, "coveo")
    assert [e.type for e in res.events] == ["page_view", "product_view", "add_to_cart", "remove_from_cart",
                                           "purchase", "product_view"]
    assert res.events[0].item_id is None and res.events[1].item_id == "a8c4c4b2"
    assert {e.user_id for e in res.events} == {e.session_id for e in res.events} == {"00000449"}
    assert res.reasons == Counter(missing_product_action=1, unknown_event_type=1, missing_user=1)
    _passes_decoder(res.events)


def test_taobao_and_time_range(tmp_path):
    path = _write(tmp_path, "UserBehavior.csv", (
        "1,2268318,2520377,pv,1511544070\n"
        "1,2333346,2520771,fav,1511561733\n"
        "1,2576651,149192,cart,1511572885\n"
        "1,3830808,4181361,buy,1511593493\n"
        "1,1,1,pv,1505117799\n"  # 2017-09-11: outside the dataset's period
        "1,1,1,click,1511593493\n"
        "1,1,1,pv\n"
    ))
    res = load(path, "taobao")
    assert [e.type for e in res.events] == ["product_view", "add_to_wishlist", "add_to_cart", "purchase"]
    assert res.events[0].ts == 1_511_544_070_000 and res.events[0].category_id == "2520377"
    assert res.reasons == Counter(out_of_time_range=1, unknown_event_type=1, wrong_column_count=1)
    assert len(load(path, "taobao", ts_range=None).events) == 5
    _passes_decoder(res.events)


def test_jsonl_and_gzip(tmp_path):
    evs = [ClickEvent(event_id=f"e{i}", user_id="u", ts=1_700_000_000_000 + i, type="search", query="q")
           for i in range(3)]
    lines = [encode_click(e) for e in evs] + [b"{not json", b'{"event_id":"x","user_id":"u","ts":1,"type":"search"}']
    extra = orjson.loads(lines[0])
    extra["_p_optimal"] = 0.5  # simulator output: the unknown field is ignored
    lines[0] = orjson.dumps(extra)
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    res = load(path, "jsonl")
    assert res.events == evs
    assert res.reasons == Counter(not_json=1, bad_value=1)


def test_streaming_counts_as_it_goes_and_ids_are_stable(tmp_path):
    path = _write(tmp_path, "UserBehavior.csv", "".join(f"{u},1,1,pv,{1511544070 + u}\n" for u in range(50)) + "x,1,1,pv,1\n")
    res = load(path, "taobao", stream=True)
    assert res.rows == 0  # nothing read yet
    first = next(res.events)
    assert first.event_id == "taobao:UserBehavior.csv:1"
    rest = list(res.events)
    assert len(rest) == 49 and res.rows == 51 and res.bad_rows == 1
    assert [e.event_id for e in load(path, "taobao").events] == [first.event_id] + [e.event_id for e in rest]


def test_unknown_format_and_wrong_header(tmp_path):
    path = _write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="unknown format"):
        load(path, "parquet")
    with pytest.raises(ValueError, match="header lacks"):
        load(path, "rees46")
    assert set(FORMATS) == {"rees46", "retailrocket", "yoochoose", "coveo", "taobao", "jsonl"}


@pytest.mark.skipif(not TAOBAO_USERHEAD.exists(),
                    reason=f"Taobao sample not present at {TAOBAO_USERHEAD} (shared data, not in the repo)")
def test_taobao_userhead_sample_matches_its_source_counts():
    """Counts from ../shared/data/taobao/userhead/SOURCE.txt: 4,321 rows; pv 3,926; cart 190; fav 128; buy 77;
    one row (2017-09-11) lies outside the dataset's period."""
    res = load(TAOBAO_USERHEAD, "taobao", ts_range=None)
    assert res.rows == 4321 and res.bad_rows == 0
    assert Counter(e.type for e in res.events) == Counter(
        product_view=3926, add_to_cart=190, add_to_wishlist=128, purchase=77)
    assert len({e.user_id for e in res.events}) == 43
    filtered = load(TAOBAO_USERHEAD, "taobao")
    assert filtered.reasons == Counter(out_of_time_range=1) and len(filtered.events) == 4320
