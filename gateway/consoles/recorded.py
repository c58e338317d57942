"""A console the policy wants recorded: the recording's side of opening a console (consoles/opening.py).

Before the cloud is asked for a console URL the store must accept a recording (`prepare`): a required
recording that it cannot take refuses the console, an optional one is dropped, both audited
`recording_failed`. Once the RFB filters exist the console's Recorder is made from them (`recorder`); it
reports back here: `recording_started` when the header is stored, and on a failure `recording_failed`
and, for a required recording, the console's end with 4534. `close` ends the recording with the console.
The page learns from the hello that it is recorded (`hello`), before the first RFB byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from gateway.audit import COMMON_FIELDS, AuditLog
from gateway.consoles.codes import CLOSE_RECORDING, CODES
from gateway.consoles.relay_core import CloseInfo
from gateway.recording.recorder import Recorder, RecordingSettings
from gateway.recording.store import RecordingStore, StoreError
from gateway.rfb import ClientMessageFilter, ServerMessageFilter

if TYPE_CHECKING:
    from gateway.clouds.base import Server
    from gateway.consoles.registry import LiveConsole
    from gateway.policy import Demands

__all__ = ["REASON_RECORDING_FAILED", "RecordedConsole", "RecordingUnavailable"]

log = logging.getLogger("gateway.recording")

# What the page shows (the store's own words go to the audit trail and the log, not to the user).
REASON_RECORDING_FAILED: Final = "Recording failed; this console must be recorded, so it was closed"
_AUDITED: Final = (*COMMON_FIELDS, "console_id", "server_id", "cloud", "server_name", "project_id", "region")


class RecordingUnavailable(Exception):
    """A required recording cannot start: the console must not open (close code 4534)."""

    code = CLOSE_RECORDING
    reason = CODES[CLOSE_RECORDING].reason


class RecordedConsole:
    """One console's recording as the use case sees it (the Recorder does the recording)."""

    def __init__(
        self,
        live: LiveConsole,
        demands: Demands,
        store: RecordingStore,
        settings: RecordingSettings,
        who: Mapping[str, Any],
        audit: AuditLog,
        fields: Mapping[str, Any],
    ) -> None:
        self._live = live
        self.required = demands.record == "required"
        self.record_input = demands.record_input
        self._store = store
        self._settings = settings
        self._who = who
        self._audit = audit
        self._fields = fields  # what each recording line says of the console
        self._recorder: Recorder | None = None
        self._began = False

    @classmethod
    async def prepare(
        cls,
        live: LiveConsole,
        demands: Demands,
        server: Server,
        *,
        store: RecordingStore | None,
        settings: RecordingSettings | None,
        store_name: str,
        audit: AuditLog,
        base: Mapping[str, Any],
    ) -> RecordedConsole | None:
        """The console's recording, if the policy wants one and the store can take it now. A required
        recording the store cannot take raises RecordingUnavailable; an optional one is dropped."""
        if not demands.recorded:
            return None
        fields = {k: base[k] for k in _AUDITED if k in base} | {"record": demands.record, "store": store_name}
        try:
            if store is None or settings is None:
                raise StoreError("no recording store: recording.hmac_keys is empty")
            await store.check_writable()
        except StoreError as exc:
            audit.emit("recording_failed", **fields, reason=str(exc))
            if demands.record == "required":
                log.warning("console %s refused: its recording cannot start: %s", live.record.id, exc)
                raise RecordingUnavailable(str(exc)) from None
            log.warning("console %s opens unrecorded: its recording cannot start: %s", live.record.id, exc)
            return None
        record = live.record
        who = {
            "id": record.id,
            "user": record.user,
            "groups": tuple(record.groups),
            "server_id": server.id,
            "server_name": server.name,
            "cloud": server.cloud,
            "permission": record.permission,
            "project_id": server.project_id,
            "region": server.region,
            "tags": tuple(server.tags),
        }
        return cls(live, demands, store, settings, who, audit, fields)

    def hello(self) -> dict[str, bool]:
        """What the page shows before the first frame: recorded, whether required, whether input too."""
        return {"required": self.required, "input": self.record_input}

    def recorder(
        self, client: ClientMessageFilter, frame: ServerMessageFilter, clock: Callable[[], float]
    ) -> Recorder:
        """The console's recorder, made from its RFB filters (made with `record=True`)."""
        self._recorder = Recorder(
            self._store,
            self._settings,
            self._who,
            record_input=self.record_input,
            client=client,
            frame=frame,
            on_started=self._started,
            on_failure=self._failed,
            clock=clock,
        )
        return self._recorder

    def start(self) -> None:
        """The relay is about to run: the recorder's background writer starts."""
        if self._recorder is not None:
            self._recorder.start()

    async def close(self, info: CloseInfo | None, closed_by: str, now: float) -> str | None:
        """End the recording with the console (`info` None: the relay was cancelled); the recording's id
        when it began, for console_closed."""
        if self._recorder is None:
            return None
        if info is None:
            code, reason = 1001, CODES[1001].reason
        else:
            code, reason = info.code, info.reason
        result = await self._recorder.close(now, code=code, reason=reason, closed_by=closed_by)
        return self._recorder.id if result.started else None

    def _started(self) -> None:
        self._began = True
        self._audit.emit(
            "recording_started", **self._fields, recording=self._who["id"], record_input=self.record_input
        )

    def _failed(self, reason: str) -> None:
        began = self._who["id"] if self._began else None
        self._audit.emit("recording_failed", **self._fields, recording=began, reason=reason)
        if self.required:
            self._live.terminate(CLOSE_RECORDING, REASON_RECORDING_FAILED, "recording")
        else:
            log.info("console %s goes on unrecorded (its recording is optional)", self._live.record.id)
