"""Loaders: public clickstream datasets (and our own JSONL) into ClickEvents.

    res = load("2019-Oct.csv", "rees46")                 # events in a list
    res = load("UserBehavior.csv", "taobao", stream=True)   # a lazy iterator for big files
    for ev in res.events: ...
    res.bad_rows, res.reasons                             # filled as rows are read

Rules shared by every format:
- A row that cannot become a valid ClickEvent is skipped and counted under a reason (wrong_column_count,
  bad_timestamp, unknown_event_type, missing_user, bad_id, bad_price, bad_quantity, out_of_time_range, ...),
  never raised. Only a file that is not the announced format at all (missing header columns) raises.
- Values obey the wire contract (schemas.codec limits: id length, 2000 <= ts < 2100, price, quantity), so
  loaded events pass the stream's decoder unchanged.
- `event_id` is f"{fmt}:{file name}:{line number}": the same file always gives the same ids.
- Absent optional values (empty cells, price 0, YooChoose category "0") become None.
- Files ending in .gz are read through gzip.

Per-format mapping (source event -> ClickEvent.type; user and session ids):
- rees46: view/cart/remove_from_cart/purchase -> product_view/add_to_cart/remove_from_cart/purchase;
  user_id, session_id = user_session; event_time "2019-10-01 00:00:00 UTC".
- retailrocket (events.csv): view/addtocart/transaction -> product_view/add_to_cart/purchase; user = visitorid;
  no session, no price.
- yoochoose: clicks -> product_view, buys -> purchase (with price, quantity); no user id, so user = session.
  `path` is the clicks file (buys found beside it by name, or given as buys_path) or a folder holding both.
  The buys file (small) is read and sorted by (session, time), then merged with the clicks file, which
  the published data orders by session and time; the list form (stream=False) is then sorted by time.
- coveo (browsing_train.csv): pageview -> page_view; event_product with product_action detail/click ->
  product_view, add -> add_to_cart, remove -> remove_from_cart, purchase -> purchase; user = session =
  session_id_hash.
- taobao (UserBehavior.csv, no header): pv/fav/cart/buy -> product_view/add_to_wishlist/add_to_cart/purchase;
  timestamps in seconds; no price, no session. Rows outside the dataset's documented period
  (2017-11-25 .. 2017-12-03, Beijing time) are dropped as out_of_time_range unless ts_range=None.
- jsonl: our ClickEvent JSON lines (e.g. `intentstream simulate` output) through schemas.codec.decode_click;
  reasons are the decoder's error codes.
"""
from __future__ import annotations

import csv
import gzip
import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from schemas.codec import MAX_ID_CHARS, MAX_PRICE, MAX_QUANTITY, MAX_TS_MS, MIN_TS_MS, DecodeError, decode_click
from schemas.events import ClickEvent

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("rees46", "retailrocket", "yoochoose", "coveo", "taobao", "jsonl")

# The Taobao UserBehavior data covers 2017-11-25 00:00 .. 2017-12-04 00:00 Beijing time (UTC+8).
TAOBAO_TIME_RANGE_MS = (1_511_539_200_000, 1_512_316_800_000)
DOCUMENTED_TIME_RANGES: dict[str, tuple[int, int]] = {"taobao": TAOBAO_TIME_RANGE_MS}

_DEFAULT = object()  # "the format's documented time range, if it has one"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


class BadRow(Exception):
    """Internal: a row that cannot be used, with a short reason code."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class LoadResult:
    """What a load produced. With stream=True, `events` is an iterator and the counters grow as it is read."""

    events: list[ClickEvent] | Iterator[ClickEvent]
    fmt: str
    rows: int = 0  # data rows read (header excluded), good and bad
    reasons: Counter = field(default_factory=Counter)  # bad-row reason -> count
    examples: dict[str, int] = field(default_factory=dict)  # bad-row reason -> first line number

    @property
    def bad_rows(self) -> int:
        return sum(self.reasons.values())

    @property
    def n_events(self) -> int:
        return self.rows - self.bad_rows


def load(path: str | Path, fmt: str, *, stream: bool = False, ts_range=_DEFAULT,
         buys_path: str | Path | None = None) -> LoadResult:
    """Read `path` in format `fmt` (one of FORMATS) into ClickEvents.

    ts_range: (min_ms, max_ms) keeps min_ms <= ts < max_ms; None keeps every valid time; by default the
    format's documented period (only taobao has one).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if ts_range is _DEFAULT:
        ts_range = DOCUMENTED_TIME_RANGES.get(fmt)
    res = LoadResult(events=[], fmt=fmt)
    if fmt == "yoochoose":
        clicks, buys = _yoochoose_paths(path, buys_path)
        parts = [_read(clicks, "yoochoose-clicks", _yoochoose_click, res, ts_range, header=None)]
        if buys is not None:  # the buys file is small and not ordered by session: sort it in memory
            buy_events = sorted(_read(buys, "yoochoose-buys", _yoochoose_buy, res, ts_range, header=None),
                                key=_session_time_key)
            parts.append(iter(buy_events))
        else:
            log.warning("%s: no YooChoose buys file found; loading clicks only", path)
        events: Iterator[ClickEvent] = heapq.merge(*parts, key=_session_time_key)
    elif fmt == "jsonl":
        events = _read_jsonl(path, res, ts_range)
    else:
        reader, header = _CSV_FORMATS[fmt]
        events = _read(path, fmt, reader, res, ts_range, header=header)
    events = _summarize(events, res, path)
    if stream:
        res.events = events
    else:
        res.events = list(events)
        if fmt == "yoochoose":
            res.events.sort(key=lambda ev: ev.ts)  # stable: equal times keep session order
    return res


# -- generic reading ------------------------------------------------------------------------------------


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


RowParser = Callable[[list[str], dict[str, int], str], ClickEvent]


def _read(path: Path, fmt: str, parse: RowParser, res: LoadResult, ts_range, header: tuple[str, ...] | None
          ) -> Iterator[ClickEvent]:
    """Rows of a CSV file through `parse(row, columns, event_id)`; bad rows go to res.reasons."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        columns: dict[str, int] = {}
        if header is not None:
            first = next(reader, None)
            if first is None:
                return
            names = [c.strip().lstrip("\ufeff") for c in first]
            missing = [c for c in header if c not in names]
            if missing:
                raise ValueError(f"{path}: not a {fmt} file, header lacks column(s) {', '.join(missing)}")
            columns = {c: names.index(c) for c in header}
        n_cols = len(columns) if header is not None else None
        prefix = f"{fmt}:{path.name}:"
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None and line == 1 and not row[0].strip()[:1].isdigit():
                continue  # a header line on a format published without one
            res.rows += 1
            try:
                if n_cols is not None and len(row) < max(columns.values()) + 1:
                    raise BadRow("wrong_column_count")
                ev = parse(row, columns, prefix + str(line))
                if ts_range is not None and not ts_range[0] <= ev.ts < ts_range[1]:
                    raise BadRow("out_of_time_range")
            except BadRow as bad:
                _count(res, bad.reason, line)
                continue
            yield ev


def _read_jsonl(path: Path, res: LoadResult, ts_range) -> Iterator[ClickEvent]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            res.rows += 1
            ev = decode_click(line)
            if isinstance(ev, DecodeError):
                _count(res, ev.code, line_no)
                continue
            if ts_range is not None and not ts_range[0] <= ev.ts < ts_range[1]:
                _count(res, "out_of_time_range", line_no)
                continue
            yield ev


def _count(res: LoadResult, reason: str, line: int) -> None:
    res.reasons[reason] += 1
    res.examples.setdefault(reason, line)


def _summarize(events: Iterable[ClickEvent], res: LoadResult, path: Path) -> Iterator[ClickEvent]:
    yield from events
    if res.bad_rows:
        log.warning("%s (%s): %d of %d rows skipped: %s", path, res.fmt, res.bad_rows, res.rows, dict(res.reasons))
    else:
        log.info("%s (%s): %d events", path, res.fmt, res.rows)


# -- field checks --------------------------------------------------------------------------------------


def _id(value: str, reason: str = "bad_id", required: bool = True) -> str | None:
    value = value.strip()
    if not value:
        if required:
            raise BadRow(reason)
        return None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise BadRow("bad_id")
    return value


def _ts_check(ms: int) -> int:
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise BadRow("bad_timestamp")
    return ms


def _ts_iso(text: str) -> int:
    """'2019-10-01 00:00:00 UTC' or '2014-04-07T10:51:09.277Z' (naive = UTC) -> epoch ms, exact."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadRow("bad_timestamp") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return _ts_check((dt - _EPOCH) // _MS)


def _ts_int(text: str, scale: int) -> int:
    try:
        return _ts_check(int(text.strip()) * scale)
    except ValueError:
        raise BadRow("bad_timestamp") from None


def _price(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRow("bad_price") from None
    if not math.isfinite(value) or value < 0 or value > MAX_PRICE:
        raise BadRow("bad_price")
    return value or None  # 0 means "unknown" in these datasets


def _quantity(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRow("bad_quantity") from None
    if value == 0:
        return None
    if not 1 <= value <= MAX_QUANTITY:
        raise BadRow("bad_quantity")
    return value


def _etype(mapping: dict[str, str], value: str) -> str:
    t = mapping.get(value.strip().lower())
    if t is None:
        raise BadRow("unknown_event_type")
    return t


# -- formats --------------------------------------------------------------------------------------------

REES46_COLUMNS = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
                  "user_id", "user_session")
REES46_TYPES = {"view": "product_view", "cart": "add_to_cart", "remove_from_cart": "remove_from_cart",
                "purchase": "purchase"}


def _rees46(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    return ClickEvent(
        event_id=event_id,
        user_id=_id(row[c["user_id"]], "missing_user"),
        ts=_ts_iso(row[c["event_time"]]),
        type=_etype(REES46_TYPES, row[c["event_type"]]),
        session_id=_id(row[c["user_session"]], required=False),
        item_id=_id(row[c["product_id"]], required=False),
        category_id=_id(row[c["category_id"]], required=False),
        price=_price(row[c["price"]]),
    )


RETAILROCKET_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
RETAILROCKET_TYPES = {"view": "product_view", "addtocart": "add_to_cart", "transaction": "purchase"}


def _retailrocket(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    return ClickEvent(
        event_id=event_id,
        user_id=_id(row[c["visitorid"]], "missing_user"),
        ts=_ts_int(row[c["timestamp"]], 1),
        type=_etype(RETAILROCKET_TYPES, row[c["event"]]),
        item_id=_id(row[c["itemid"]], required=False),
    )


COVEO_COLUMNS = ("session_id_hash", "event_type", "product_action", "product_sku_hash",
                 "server_timestamp_epoch_ms", "hashed_url")
COVEO_PRODUCT_ACTIONS = {"detail": "product_view", "click": "product_view", "add": "add_to_cart",
                         "remove": "remove_from_cart", "purchase": "purchase"}


def _coveo(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    kind = row[c["event_type"]].strip().lower()
    action = row[c["product_action"]].strip().lower()
    if kind == "pageview":
        etype = "page_view"
    elif kind == "event_product":
        if not action:
            raise BadRow("missing_product_action")
        etype = _etype(COVEO_PRODUCT_ACTIONS, action)
    else:
        raise BadRow("unknown_event_type")
    session = _id(row[c["session_id_hash"]], "missing_user")
    return ClickEvent(
        event_id=event_id,
        user_id=session,
        ts=_ts_int(row[c["server_timestamp_epoch_ms"]], 1),
        type=etype,
        session_id=session,
        item_id=_id(row[c["product_sku_hash"]], required=False),
    )


TAOBAO_TYPES = {"pv": "product_view", "fav": "add_to_wishlist", "cart": "add_to_cart", "buy": "purchase"}


def _taobao(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    if len(row) != 5:
        raise BadRow("wrong_column_count")
    user, item, category, behavior, ts = row
    return ClickEvent(
        event_id=event_id,
        user_id=_id(user, "missing_user"),
        ts=_ts_int(ts, 1000),
        type=_etype(TAOBAO_TYPES, behavior),
        item_id=_id(item, required=False),
        category_id=_id(category, required=False),
    )


def _yoochoose_click(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    if len(row) != 4:
        raise BadRow("wrong_column_count")
    session, ts, item, category = row
    session = _id(session, "missing_user")
    category = category.strip()
    return ClickEvent(
        event_id=event_id, user_id=session, session_id=session, ts=_ts_iso(ts), type="product_view",
        item_id=_id(item, required=False),
        category_id=None if category in ("", "0") else _id(category),  # "0": category unknown
    )


def _yoochoose_buy(row: list[str], c: dict[str, int], event_id: str) -> ClickEvent:
    if len(row) != 5:
        raise BadRow("wrong_column_count")
    session, ts, item, price, quantity = row
    session = _id(session, "missing_user")
    return ClickEvent(
        event_id=event_id, user_id=session, session_id=session, ts=_ts_iso(ts), type="purchase",
        item_id=_id(item, required=False), price=_price(price), quantity=_quantity(quantity),
    )


def _session_time_key(ev: ClickEvent) -> tuple:
    # Numeric session ids compare by length first, so "9" < "10" without converting.
    s = ev.session_id or ""
    return (len(s), s, ev.ts, ev.type == "purchase")


def _yoochoose_paths(path: Path, buys_path) -> tuple[Path, Path | None]:
    if path.is_dir():
        clicks = next((p for p in sorted(path.iterdir()) if "clicks" in p.name), None)
        if clicks is None:
            raise ValueError(f"{path}: no YooChoose clicks file (name containing 'clicks') in this folder")
        buys = next((p for p in sorted(path.iterdir()) if "buys" in p.name), None)
    else:
        clicks = path
        guess = path.with_name(path.name.replace("clicks", "buys"))
        buys = guess if guess != path and guess.exists() else None
    if buys_path is not None:
        buys = Path(buys_path)
    return clicks, buys


# fmt -> (row parser, required header columns or None for headerless files)
_CSV_FORMATS: dict[str, tuple[RowParser, tuple[str, ...] | None]] = {
    "rees46": (_rees46, REES46_COLUMNS),
    "retailrocket": (_retailrocket, RETAILROCKET_COLUMNS),
    "coveo": (_coveo, COVEO_COLUMNS),
    "taobao": (_taobao, None),
}
