"""The DICOMweb edge: HTTP in, a ``DicomWeb`` call (in a worker thread), HTTP out."""

from __future__ import annotations

import gzip
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from sonobridge.core.errors import CoreError
from sonobridge.core.events import Answered
from sonobridge.core.imaging.archive import is_video, with_base
from sonobridge.core.imaging.frames import EXPLICIT_LE, NATIVE
from sonobridge.core.imaging.remote import RemoteArchive
from sonobridge.core.limits import Limits
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.services import Core
from sonobridge.dicomweb import negotiate, rendering
from sonobridge.dicomweb.accept import parse_accept
from sonobridge.dicomweb.errors import DicomwebError, warning_of
from sonobridge.dicomweb.errors import body as error_body
from sonobridge.dicomweb.multipart import Part, new_boundary, write_parts
from sonobridge.dicomweb.stow import stow
from sonobridge.dicomweb.xml import dataset_xml
from sonobridge.web.baseurl import base_url

log = logging.getLogger("sonobridge.dicomweb")
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
JSON = "application/dicom+json"
ALL_METHODS = ["GET", "HEAD", "POST", "DELETE"]


def _uid(value: str, what: str) -> str:
    if len(value) > 64 or not UID.match(value):
        raise DicomwebError(400, f"{what} {value!r} is not a valid UID")
    return value


class DicomWebApp:
    def __init__(self, core: Core, *, configured_base: str | None, threads: int,
                 remote: RemoteArchive | None = None) -> None:
        self.core = core
        self.service = core.archive
        self.configured_base = configured_base
        self.threads = threads
        self.remote = remote  # the PACS proxy's DIMSE side, given by the app
        self._limiter: anyio.CapacityLimiter | None = None
        self._decisions: dict[tuple[str, str, str], float] = {}
        self._peers: Any = None  # the PACS proxy (dicomweb/peers.py), made on first use

    def routes(self) -> list[BaseRoute]:
        s, se, i = "/studies/{study}", "/series/{series}", "/instances/{sop}"
        table: list[tuple[str, Callable[..., Any], list[str]]] = [
            ("/studies", self.studies, ["GET", "HEAD", "POST"]),
            ("/series", self.all_series, ["GET", "HEAD"]),
            ("/instances", self.all_instances, ["GET", "HEAD"]),
            (s, self.study, ["GET", "HEAD", "POST", "DELETE"]),
            (s + "/metadata", self.metadata, ["GET", "HEAD"]),
            (s + "/rendered", self.rendered, ["GET", "HEAD"]),
            (s + "/thumbnail", self.thumbnail, ["GET", "HEAD"]),
            (s + "/series", self.study_series, ["GET", "HEAD"]),
            (s + "/instances", self.study_instances, ["GET", "HEAD"]),
            (s + se, self.retrieve, ["GET", "HEAD", "DELETE"]),
            (s + se + "/metadata", self.metadata, ["GET", "HEAD"]),
            (s + se + "/rendered", self.rendered, ["GET", "HEAD"]),
            (s + se + "/thumbnail", self.thumbnail, ["GET", "HEAD"]),
            (s + se + "/instances", self.series_instances, ["GET", "HEAD"]),
            (s + se + i, self.retrieve, ["GET", "HEAD", "DELETE"]),
            (s + se + i + "/metadata", self.metadata, ["GET", "HEAD"]),
            (s + se + i + "/rendered", self.rendered, ["GET", "HEAD"]),
            (s + se + i + "/thumbnail", self.thumbnail, ["GET", "HEAD"]),
            (s + se + i + "/frames/{frames}", self.frames, ["GET", "HEAD"]),
            (s + se + i + "/frames/{frames}/rendered", self.rendered, ["GET", "HEAD"]),
            (s + se + i + "/frames/{frames}/thumbnail", self.thumbnail, ["GET", "HEAD"]),
            (s + se + i + "/bulkdata/{tag}", self.bulkdata, ["GET", "HEAD"]),
        ]
        routes = [Route(path, self._wrap(handler), methods=methods, name=f"dicomweb:{path}")
                  for path, handler, methods in table]
        if self._peers is None:
            from sonobridge.dicomweb.peers import PeerProxy

            self._peers = PeerProxy(self, self.remote)
        routes.append(Route("/peers/{peer}/{rest:path}", self._peers, name="dicomweb:peers"))
        return [Mount("/dicomweb", routes=routes)]

    def _wrap(self, handler: Callable[..., Any]) -> Callable[[Request], Any]:
        searches = {self.studies, self.all_series, self.all_instances, self.study_series,
                    self.study_instances, self.series_instances}
        search = handler in searches

        async def endpoint(request: Request) -> Response:
            try:
                params = request.path_params
                for key, what in (("study", "Study Instance UID"),
                                  ("series", "Series Instance UID"),
                                  ("sop", "SOP Instance UID")):
                    if key in params:
                        _uid(params[key], what)
                await self.authorize(request, search)
                response = await handler(request)
                self._audit(request, search, response.status_code)
                return response
            except FileNotFoundError:
                # The index names an object the blob store no longer has: say so (404 with a
                # Warning, as PS3.18 answers a missing resource) and tell the operator.
                log.error("%s: the stored object is missing from the blob store (run "
                          "`sonobridge verify`)", request.url.path)
                exc = DicomwebError(404, "the stored object is missing from the blob store",
                                    warning="the object is indexed but its stored file is "
                                            "missing; the operator is told")
                self._audit(request, search, 404, exc.message)
                return Response(orjson.dumps(error_body(exc)), 404,
                                {"Warning": f'299 SonoBridge "{exc.warning}"'},
                                media_type="application/json")
            except CoreError as exc:
                self._audit(request, search, exc.status, exc.message)
                warning = warning_of(exc)
                headers = {"Warning": f'299 SonoBridge "{warning}"'} if warning else \
                    {k: v for k, v in exc.headers.items() if k == "Warning"}
                return Response(orjson.dumps(error_body(exc)), exc.status, headers,
                                media_type="application/json")

        return endpoint

    def caller(self, request: Request) -> Caller:
        """The request's caller: the guard's policy, the FHIR base next to this root."""
        policy = request.scope.get("state", {}).get("policy")
        if not isinstance(policy, Policy):
            raise DicomwebError(401, "no authorization decision was made for this request")
        fhir_base = self.root(request)[: -len("/dicomweb")] + "/fhir"
        return Caller(policy, fhir_base, request.client.host if request.client else "")

    async def authorize(self, request: Request, search: bool) -> None:
        """DICOMweb follows FHIR: a study is readable exactly when its ImagingStudy is; storing
        needs create rights on ImagingStudy, deleting needs delete rights on it."""
        caller = self.caller(request)
        request.state.caller = caller
        request.state.allowed_studies = None
        if caller.policy.unrestricted:
            return
        method = request.method
        study = request.path_params.get("study")
        if method == "POST":
            permission = "c"
        elif method == "DELETE":
            permission = "d"
        else:
            permission = "s" if search else "r"
        # A viewer reads a study in a burst (a cine frame by frame): a token's right to read
        # one study is decided once and remembered for DECISION_SECONDS, without a thread hop.
        key = (caller.policy.token_id, study, permission) \
            if caller.policy.token_id and study and permission in "rs" else None
        now = time.monotonic()
        if key is not None and self._decisions.get(key, 0.0) > now:
            return
        request.state.allowed_studies = await self._run(self.core.access.studies, caller,
                                                        permission, study)
        if key is not None:
            if len(self._decisions) > 10_000:
                self._decisions.clear()
            self._decisions[key] = now + DECISION_SECONDS

    def _audit(self, request: Request, search: bool, status: int, message: str = "") -> None:
        """DICOMweb retrievals, queries, stores and deletions, after the response."""
        events = self.core.events
        policy = request.scope.get("state", {}).get("policy")
        if not events.wants(Answered) or not isinstance(policy, Policy):
            return
        method = request.method
        if method == "POST":
            kind, action = "dicom-store", "C"
        elif method == "DELETE":
            kind, action = "dicom-access", "D"
        elif search:
            kind, action = "dicom-query", "E"
        else:
            kind, action = "dicom-access", "R"
        outcome = "0" if status < 400 else ("8" if status >= 500 else "4")
        caller = Caller(policy, "", request.client.host if request.client else "")
        events.emit(Answered(caller, kind, action, request.url.path.rsplit("/", 1)[-1][:40],
                             outcome=outcome, study=request.path_params.get("study"),
                             query=request.url.query if search else None,
                             detail=f"{status}: {message[:200]}" if message else "",
                             instances=(sop,) if (sop := request.path_params.get("sop"))
                             else ()))

    async def _watched(self, request: Request, fn: Callable[..., Any], *args: Any) -> Any:
        """Long work (a rendered cine) with a budget (``core/limits.py``): stopped between
        frames when the client goes away or the time is up."""
        budget = self.service.limits.budget()
        done = anyio.Event()

        async def watch() -> None:
            while not done.is_set():
                if await request.is_disconnected():
                    budget.cancel()
                    return
                with anyio.move_on_after(0.25):
                    await done.wait()

        outcome: list[Any] = []
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:  # kept out of the task group, which would wrap it in an exception group
                outcome.append(await self._run(fn, *args, budget))
            except Exception as exc:
                outcome.append(exc)
            finally:
                done.set()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def root(self, request: Request) -> str:
        return base_url(request.headers, request.url.scheme, self.configured_base,
                        request.scope.get("server")) + "/dicomweb"

    # ------------------------------------------------------------------------ QIDO

    async def studies(self, request: Request) -> Response:
        if request.method == "POST":
            return await stow(self, request, None)
        return await self._search(request, "study")

    async def all_series(self, request: Request) -> Response:
        return await self._search(request, "series")

    async def all_instances(self, request: Request) -> Response:
        return await self._search(request, "instance")

    async def study_series(self, request: Request) -> Response:
        return await self._search(request, "series", request.path_params["study"])

    async def study_instances(self, request: Request) -> Response:
        return await self._search(request, "instance", request.path_params["study"])

    async def series_instances(self, request: Request) -> Response:
        return await self._search(request, "instance", request.path_params["study"],
                                  request.path_params["series"])

    async def _search(self, request: Request, level: str, study: str | None = None,
                      series: str | None = None) -> Response:
        params = list(request.query_params.multi_items())
        media = _qido_media(request)
        results, warnings = await self._run(self.service.search, level, params, study, series,
                                            request.state.allowed_studies)
        headers = {"Warning": ", ".join(f'299 SonoBridge "{w}"' for w in warnings)} \
            if warnings else {}
        root = self.root(request)
        if media == "xml":
            boundary = new_boundary()
            parts = [Part("application/dicom+xml",
                          [with_base(dataset_xml(r), root)]) for r in results]
            body = b"".join(write_parts(boundary, parts))
            return Response(body, 200, headers, media_type=f'multipart/related; '
                            f'type="application/dicom+xml"; boundary={boundary}')
        if not results:
            return Response(b"", 204, headers)
        body = with_base(orjson.dumps(results), root)
        return Response(body, 200, headers, media_type=JSON)

    # ------------------------------------------------------------------------ retrieve

    async def study(self, request: Request) -> Response:
        if request.method == "POST":
            return await stow(self, request, request.path_params["study"])
        return await self.retrieve(request)

    async def retrieve(self, request: Request) -> Response:
        p = request.path_params
        study, series, sop = p["study"], p.get("series"), p.get("sop")
        if request.method == "DELETE":
            count = await self._run(self.service.delete, request.state.caller, study, series,
                                    sop)
            return Response(orjson.dumps({"deleted": count}), 200,
                            media_type="application/json")
        rows = await self._run(self.service.instances, study, series, sop)
        accept = request.query_params.get("accept") or request.headers.get("accept")
        choice = negotiate.choose_instances(accept, {r.transfer_syntax for r in rows})
        boundary = new_boundary()
        service = self.service
        root = self.root(request)
        if choice.mode != "stored":  # decided before the first byte: 406, not a cut stream
            for row in rows:
                if not service.can_transcode(row, choice.mode):
                    service.transcoded(row, choice.mode)  # raises the 406 with its reason

        if choice.mode == "stored":  # a missing first object is a 404, not a cut stream
            first: Iterable[bytes] | None = service.stream(rows[0])

        def parts() -> Iterator[Part]:
            nonlocal first
            for row in rows:
                location = f"{root}/studies/{row.study_uid}/series/{row.series_uid}" \
                           f"/instances/{row.sop_uid}"
                if choice.mode == "stored":
                    ts = row.transfer_syntax
                    try:
                        chunks: Iterable[bytes] = first if first is not None else \
                            service.stream(row)
                    except FileNotFoundError:  # headers are sent: left out, and logged
                        log.error("%s: stored object missing from the blob store, left out "
                                  "of the response (run `sonobridge verify`)", location)
                        continue
                    first = None
                else:
                    ts = choice.mode
                    chunks = service.transcoded(row, ts)
                yield Part(f"application/dicom; transfer-syntax={ts}", chunks, location)

        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return StreamingResponse(write_parts(boundary, parts()), 200,
                                 media_type=content_type)

    async def metadata(self, request: Request) -> Response:
        p = request.path_params
        accept = parse_accept(request.query_params.get("accept") or
                              request.headers.get("accept"))
        if accept and not any(r.matches(JSON) or r.media == "application/json"
                              for r in accept):
            raise DicomwebError(406, "metadata is available as application/dicom+json")
        body, etag = await self._run(self.service.metadata, p["study"], p.get("series"),
                                     p.get("sop"))
        root = self.root(request)
        # The same bytes, the same ETag in every worker (Python's hash() is salted per
        # process): the root the links hold is part of the bytes, so part of the tag.
        etag = f'W/"{etag}-{zlib.crc32(root.encode()):08x}"'
        if request.headers.get("if-none-match") == etag:
            return Response(b"", 304, {"ETag": etag})
        body = with_base(body, root)
        headers = {"ETag": etag, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 1024:
            body = await self._run(gzip.compress, body, 5)
            headers["Content-Encoding"] = "gzip"
        return Response(body, 200, headers, media_type=JSON)

    # ------------------------------------------------------------------------ frames

    async def frames(self, request: Request) -> Response:
        p = request.path_params
        numbers = _frame_list(p["frames"], self.service.limits)
        accept = request.query_params.get("accept") or request.headers.get("accept")
        service = self.service

        def work() -> tuple[Any, negotiate.Choice, list[bytes]]:
            """The instance, the choice and the bytes in one thread hop: a viewer asks for
            a cine's frames one request at a time, and each hop costs as much as the read."""
            row = service.instance(p["study"], p["series"], p["sop"])
            choice = negotiate.choose_frames(accept, row.transfer_syntax, len(numbers))
            if choice.mode == "stored":
                return row, choice, service.frame_bytes(row, numbers)
            if choice.mode == "native":
                return row, choice, service.native_frames(row, numbers)
            if choice.mode == "decode":
                return row, choice, [service.decoded_frame(row, n) for n in numbers]
            return row, choice, [service.jpeg_frame(row, n) for n in numbers]

        row, choice, data = await self._run(work)
        syntax = choice.transfer_syntax
        part_type = f"{choice.part_type}; transfer-syntax={syntax}"
        if not choice.multipart:
            return Response(data[0], 200, media_type=part_type)
        boundary = new_boundary()
        root = self.root(request)
        location = f"{root}/studies/{row.study_uid}/series/{row.series_uid}/instances/" \
                   f"{row.sop_uid}/frames/"
        body = b"".join(write_parts(boundary, [Part(part_type, [d], f"{location}{n}")
                                               for n, d in zip(numbers, data, strict=True)]))
        return Response(body, 200, media_type=f'multipart/related; '
                        f'type="{choice.part_type}"; boundary={boundary}')

    async def bulkdata(self, request: Request) -> Response:
        p = request.path_params
        tag = p["tag"].upper()
        row = await self._run(self.service.instance, p["study"], p["series"], p["sop"])
        boundary = new_boundary()
        media_type = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        if tag == "7FE00010":
            # Frame by frame from the blob store: a 2 GB cine streams in bounded memory.
            count = await self._run(self.service.frame_count, row)
            media = "application/octet-stream" if row.transfer_syntax in NATIVE else \
                negotiate.stored_media_type(row.transfer_syntax)
            part = f"{media}; transfer-syntax={row.transfer_syntax}"
            service = self.service

            def frames() -> Iterator[Part]:
                for number in range(1, count + 1):
                    yield Part(part, [service.frame_bytes(row, [number])[0]])

            return StreamingResponse(write_parts(boundary, frames()), 200,
                                     media_type=media_type)
        value = await self._run(self.service.bulk_value, row, tag)
        body = b"".join(write_parts(boundary, [Part("application/octet-stream", [value])]))
        return Response(body, 200, media_type=media_type)

    # ------------------------------------------------------------------------ rendered

    async def rendered(self, request: Request) -> Response:
        return await self._render(request, thumbnail=False)

    async def thumbnail(self, request: Request) -> Response:
        return await self._render(request, thumbnail=True)

    async def _render(self, request: Request, thumbnail: bool) -> Response:
        p = request.path_params
        query = request.query_params
        quality = rendering.parse_quality(query.get("quality"))
        viewport = rendering.parse_viewport(query.get("viewport"))
        window = rendering.parse_window(query.get("window"))
        frame = None
        if "frames" in p:
            numbers = _frame_list(p["frames"], self.service.limits)
            if len(numbers) != 1:
                raise DicomwebError(400, "render one frame at a time")
            frame = numbers[0]
        if "sop" in p:
            row = await self._run(self.service.instance, p["study"], p["series"], p["sop"])
        else:
            rows = await self._run(self.service.instances, p["study"], p.get("series"))
            first = rows[len(rows) // 2] if thumbnail else rows[0]
            row = await self._run(self.service.instance, first.study_uid, first.series_uid,
                                  first.sop_uid)
        count = row.number_of_frames or 1
        if frame is not None and not 1 <= frame <= count:
            raise DicomwebError(404, f"frame {frame} does not exist: this instance has frames "
                                f"1 to {count}")
        from sonobridge.core.imaging.metadata import VIDEO_SYNTAXES

        video = row.transfer_syntax in VIDEO_SYNTAXES
        multiframe = (count > 1 or video) and frame is None and not thumbnail
        media = rendering.choose(request.headers.get("accept"), multiframe=multiframe,
                                query_accept=query.get("accept"))
        if thumbnail:
            data = await self._run(self.service.thumbnail, row, media
                                   if media.startswith("image/") else "image/jpeg", viewport,
                                   frame)
            media = media if media.startswith("image/") else "image/jpeg"
        else:
            if media.startswith("image/") and not multiframe and frame is None:
                frame = 1
            if is_video(row, media, frame):  # made on disk a frame at a time; Range served
                path = await self._watched(request, self.service.render_video, row, media,
                                           viewport, window)
                return FileResponse(path, media_type=media, content_disposition_type="inline")
            data = await self._watched(request, self.service.render, row, media, frame,
                                       quality, viewport, window)
        return _ranged(request, data, media)


# How long a token's right to read one study is remembered (``DicomWebApp.authorize``): a
# change of the study's patient or of the token's grants takes effect within this time.
DECISION_SECONDS = 10.0


def _ranged(request: Request, data: bytes, media: str) -> Response:
    """Honour ``Range`` (browsers seek in videos this way): 206 with Content-Range."""
    headers = {"Accept-Ranges": "bytes"}
    header = request.headers.get("range")
    if header and header.startswith("bytes="):
        start_text, _, end_text = header[6:].split(",")[0].partition("-")
        size = len(data)
        try:
            if start_text:
                start = int(start_text)
                end = int(end_text) if end_text else size - 1
            else:
                start, end = max(size - int(end_text), 0), size - 1
        except ValueError:
            start, end = 0, -1
        if start >= size or end < start:
            return Response(b"", 416, {"Content-Range": f"bytes */{size}"})
        end = min(end, size - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(data[start:end + 1], 206, headers, media_type=media)
    return Response(data, 200, headers, media_type=media)


def _frame_list(text: str, limits: Limits) -> list[int]:
    """``1,3,5``: each a positive number, each once, at most ``limits.frame_list`` of them
    (a 600-byte URL must not ask for 70 MB)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    limits.frame_numbers(len(parts))
    if not parts or not all(part.isascii() and part.isdigit() and len(part) <= 9
                            for part in parts):
        raise DicomwebError(400, f"frame list {text[:80]!r}: expected numbers like 1,3,5")
    numbers = [int(part) for part in parts]
    if len(set(numbers)) != len(numbers):
        raise DicomwebError(400, "a frame number is asked for twice")
    return numbers


def _qido_media(request: Request) -> str:
    accept = parse_accept(request.query_params.get("accept") or request.headers.get("accept"))
    if not accept:
        return "json"
    for media_range in accept:
        if media_range.media == "multipart/related" and \
                media_range.part_type == "application/dicom+xml":
            return "xml"
        if media_range.matches(JSON) or media_range.media in ("application/json",):
            return "json"
    raise DicomwebError(406, "QIDO-RS answers application/dicom+json or multipart/related; "
                        'type="application/dicom+xml"')


__all__ = ["EXPLICIT_LE", "DicomWebApp"]
