"""Request bodies of ``charrnn serve``: each endpoint's JSON fields, their types, defaults and ranges.

    request = parse_generate(raw_body, vocab, config)   # GenerateRequest(seed, options, random_seed, stream)
    text = parse_score(raw_body, config)
    request = parse_inspect(raw_body, model, config)    # InspectRequest(text, top_k, feature, top)

Each raises RequestError (an HTTP status and a one-line message) naming the first fault; server.py answers it
as ``{"error": ...}``. ``config`` is the server's ServeConfig (its limits).
"""

import json
import math
import re
import secrets
from dataclasses import dataclass
from http import HTTPStatus

from ..inference.features import FeatureError, check_feature
from ..inference.sample import BEAM_SCORES, SamplingOptions


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, message, status=HTTPStatus.BAD_REQUEST, headers=()):
        super().__init__(message)
        self.status, self.headers = status, tuple(headers)


# ---- request bodies: each field's type, default and range ----

_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _field(body, name, kind, default, nullable=False):
    value = body.get(name, default)
    if value is None and nullable:
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RequestError(f"{name} must be {_TYPES[kind]}{' or null' if nullable else ''}, not {_show(value)}")
    if kind is float and not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number")
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"{name} is not valid Unicode (it holds a lone surrogate)") from None
    return value


def _object(raw, allowed):
    """The JSON object in ``raw`` bytes, with no fields outside ``allowed``."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8") from None
    except ValueError as e:
        raise RequestError(f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise RequestError("the body is nested too deeply to read") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(_show, unknown))}; "
                           f"expected: {', '.join(allowed)}")
    return body


def _show(value, width=40):
    """A request's value in an error message, as JSON, cut short if long."""
    try:
        return cut(json.dumps(value), width)
    except RecursionError:  # nested almost as deeply as the body could be read
        return "a deeply nested value"


def cut(text, width=80):
    return text if len(text) <= width else text[: width - 1] + "…"


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


@dataclass
class GenerateRequest:
    seed: str
    options: SamplingOptions
    random_seed: int
    stream: bool


GENERATE_FIELDS = ("seed", "length", "temperature", "top_k", "top_p", "random_seed", "stream", "stop",
                   "repetition_penalty", "repetition_window", "beam_width", "beam_score")
MAX_STOPS, MAX_STOP_CHARS, MAX_BEAM = 16, 100, 64  # stop texts a request may give, each one's length; beam width


def parse_generate(raw, vocab, config):
    """A GenerateRequest from a request body; RequestError naming the first fault."""
    body = _object(raw, GENERATE_FIELDS)
    seed = _field(body, "seed", str, "")
    length = _field(body, "length", int, min(500, config.max_length))
    temperature = _field(body, "temperature", float, 1.0)
    top_k = _field(body, "top_k", int, None, nullable=True)
    top_p = _field(body, "top_p", float, None, nullable=True)
    random_seed = _field(body, "random_seed", int, None, nullable=True)
    stream = _field(body, "stream", bool, False)
    if len(seed) > config.max_seed:
        raise RequestError(f"seed is {len(seed):,} characters; this server takes at most {config.max_seed:,}")
    if not 1 <= length <= config.max_length:
        raise RequestError(f"length must be from 1 to {config.max_length:,} (this server's --max-length), not {length}")
    if temperature < 0:
        raise RequestError(f"temperature must be 0 or more, not {temperature}")
    if top_k is not None and top_k < 1:
        raise RequestError(f"top_k must be 1 or more (or null), not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1] (or null), not {top_p}")
    if random_seed is not None and not 0 <= random_seed < 2**64:
        raise RequestError(f"random_seed must be from 0 to 2**64 - 1 (or null), not {random_seed}")
    try:
        vocab.encode(model_text(vocab, seed))
    except KeyError as e:
        raise RequestError(f"seed has characters the model has never seen: {cut(e.args[0])}") from None
    if random_seed is None:
        random_seed = secrets.randbits(32)  # answered, so the text can be had again
    options = SamplingOptions(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                              **_item_fields(body, vocab))
    if options.beam_width is not None and (temperature != 1 or top_k is not None or top_p is not None
                                           or options.repetition_penalty != 1):
        raise RequestError("beam_width follows the model's own probabilities: it takes no temperature, top_k, "
                           "top_p or repetition_penalty")
    return GenerateRequest(seed=seed, options=options, random_seed=random_seed, stream=stream)


def _item_fields(body, vocab):
    """The stop texts, the repetition penalty and the beam of a generate request, checked."""
    stop = body.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(t, str) for t in stop):
        raise RequestError(f"stop must be a string or a list of strings, not {_show(stop)}")
    if len(stop) > MAX_STOPS or not all(1 <= len(t) <= MAX_STOP_CHARS for t in stop):
        raise RequestError(f"stop takes at most {MAX_STOPS} texts of 1 to {MAX_STOP_CHARS} characters each")
    for text in stop:
        try:
            vocab.encode(model_text(vocab, _field({"stop": text}, "stop", str, "")))
        except KeyError as e:
            raise RequestError(f"stop {_show(text)} has characters the model has never seen: {cut(e.args[0])}"
                               ) from None
    penalty = _field(body, "repetition_penalty", float, 1.0)
    window = _field(body, "repetition_window", int, SamplingOptions.repetition_window)
    beam_width = _field(body, "beam_width", int, None, nullable=True)
    beam_score = _field(body, "beam_score", str, "total")
    if penalty < 1:
        raise RequestError(f"repetition_penalty must be 1 or more, not {penalty}")
    if window < 1:
        raise RequestError(f"repetition_window must be 1 or more, not {window}")
    if beam_width is not None and not 1 <= beam_width <= MAX_BEAM:
        raise RequestError(f"beam_width must be from 1 to {MAX_BEAM} (or null), not {beam_width}")
    if beam_score not in BEAM_SCORES:
        raise RequestError(f"beam_score must be one of {', '.join(map(_show, BEAM_SCORES))}, not {_show(beam_score)}")
    return {"stop": tuple(model_text(vocab, t) for t in stop), "repetition_penalty": penalty,
            "repetition_window": window, "beam_width": beam_width, "beam_score": beam_score}


def parse_score(raw, config):
    """The text to score from a request body; RequestError naming the first fault."""
    body = _object(raw, ("text",))
    if "text" not in body:
        raise RequestError('the body needs a "text" field')
    text = _field(body, "text", str, None)
    if not text:
        raise RequestError("text is empty")
    if len(text) > config.max_score_chars:
        raise RequestError(f"text is {len(text):,} characters; this server scores at most {config.max_score_chars:,} "
                           "(--max-score-chars)", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return text


def content_length(value):
    """A Content-Length header's value as an int: one to eighteen ASCII digits, else None (``str.isdigit`` takes
    "²", ``int`` takes "1_0" and refuses more than 4,300 digits)."""
    value = value.strip()
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None


@dataclass
class InspectRequest:
    text: str
    top_k: int  # the likeliest next characters listed for each character
    feature: str | None  # features.py's name: rank the units by it
    top: int  # units ranked


INSPECT_FIELDS = ("text", "top_k", "feature", "top")
MAX_TOP = 50  # the most units or next characters an inspect request may ask for


def parse_inspect(raw, model, config):
    """An InspectRequest from a request body; RequestError naming the first fault."""
    body = _object(raw, INSPECT_FIELDS)
    text = _field(body, "text", str, "")
    top_k, top = _field(body, "top_k", int, 5), _field(body, "top", int, 10)
    feature = _field(body, "feature", str, None, nullable=True)
    if not text:
        raise RequestError('the body needs a "text" field, not empty')
    if len(text) > config.max_inspect_chars:
        raise RequestError(f"text is {len(text):,} characters; this server inspects at most "
                           f"{config.max_inspect_chars:,} (--max-inspect-chars)", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    for name, value in (("top_k", top_k), ("top", top)):
        if not 1 <= value <= MAX_TOP:
            raise RequestError(f"{name} must be from 1 to {MAX_TOP}, not {value}")
    if feature is not None:
        if model.context_length is not None:
            raise RequestError("feature ranks a recurrent model's units; this gpt model has none")
        try:
            check_feature(feature)
        except FeatureError as e:
            raise RequestError(str(e)) from None
    return InspectRequest(text, top_k, feature, top)


def model_text(vocab, text):
    """A request's text as the model reads it: a string, or bytes in the model's encoding for a byte model."""
    if not vocab.bytes_mode:
        return text
    try:
        return text.encode(vocab.encoding)
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end]
        raise RequestError(f"text has characters that {vocab.encoding} cannot encode: {bad!r}") from None
