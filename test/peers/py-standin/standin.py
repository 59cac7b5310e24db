#!/usr/bin/python3
"""A stand-in for ComfyStream's WebRTC server (server/app.py), for testing the relay without a GPU.

It reproduces the wire contract described in /work/shared/specs/comfystream-webrtc.md (§1, §5, §6):
the HTTP routes, POST /offer signalling with H.264 forced on one sendrecv video m-line, the "control"
data channel with ComfyStream's request/reply shapes, one global "pipeline" shared by every peer, and
the cleanup-on-close behaviour. The "workflow" is a trivial frame transform (colour inversion or
passthrough) whose output frames carry the input frame's pts, so returned RTP timestamps are the sent
ones plus a constant.

Needs Debian bookworm's python3-aiortc (1.4.0), python3-av, python3-aiohttp and python3-numpy, so run
it with /usr/bin/python3. Run every instance inside a loopback-only network namespace (see README.md).

On start it prints one JSON line to stdout, {"event": "listening", "host": ..., "port": ...}, so a
parent process can use --port 0. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set

import aioice.ice
import av
import numpy
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import h264
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import RTCRtpSender

log = logging.getLogger("py-standin")

# ComfyStream pins aiortc's REMB-driven H.264 bitrate to 2 Mbit/s by patching these module constants.
PINNED_H264_BITRATE = 2_000_000

# ComfyStream's noop track gives up (and so ends the returned video) after 5 s without input.
NOOP_RECV_TIMEOUT_S = 5.0
# ComfyStream sends a silent audio frame when no audio arrives for 1 s. That frame has no pts
# (pipeline.py get_processed_audio_frame), and aiortc's sender dies on it ("uint32_add ... NoneType"):
# no audio comes back on that connection again. Seen against the real server; copied here.
AUDIO_SILENCE_AFTER_S = 1.0
SILENCE_SAMPLES = 1024
SILENCE_RATE = 48_000

INPUT_NODE_TYPES = {"LoadTensor", "PrimaryInputLoadImage", "LoadImage", "LoadAudioTensor"}
OUTPUT_NODE_TYPES = {"SaveTensor", "PreviewImage", "SaveImage", "SaveAudioTensor", "SaveTextTensor"}


@dataclass
class Settings:
    host: str
    port: int
    ice_addresses: List[str]
    mode: str  # "filter" (invert colours) or "passthrough"
    max_fps: Optional[float]
    queue: str  # "latest" (1-slot, newest wins) or "backlog" (unbounded FIFO)
    warmup_ms: int
    fail_prompts: bool
    pli: str  # "honour" or "ignore"
    keyframe_interval_s: Optional[float]
    ice_consent_interval_s: Optional[float]
    exit_with_parent: bool


# ---------------------------------------------------------------------------------------------------
# Keyframes. Debian's aiortc 1.4.0 receives PLIs but its H.264 encoder ignores the request, and it
# sets no GOP, so x264's default keyint of 250 (~8 s) applies. ComfyStream runs current aiortc, where a
# PLI produces an IDR. To behave like that, a forced keyframe here drops the encoder context: the next
# frame opens a fresh libx264 context, and a fresh context always starts with an IDR (with SPS/PPS).
# ---------------------------------------------------------------------------------------------------


@dataclass
class KeyframeStats:
    keyframe_requests: int = 0  # PLIs that reached the encoder (aiortc coalesces PLIs between frames)
    forced_idrs: int = 0  # encoder restarts we made (PLI honoured or periodic)
    encoder_opens: int = 0


KEYFRAMES = KeyframeStats()


def install_encoder_patches(settings: Settings) -> None:
    h264.MAX_BITRATE = PINNED_H264_BITRATE
    h264.MIN_BITRATE = PINNED_H264_BITRATE

    original_encode_frame: Callable[..., Any] = h264.H264Encoder._encode_frame

    def encode_frame_with_keyframe_policy(self: h264.H264Encoder, frame: av.VideoFrame, force_keyframe: bool):
        now = time.monotonic()
        if force_keyframe:
            KEYFRAMES.keyframe_requests += 1
        periodic_due = (
            settings.keyframe_interval_s is not None
            and now - getattr(self, "_standin_last_open", now) >= settings.keyframe_interval_s
        )
        if self.codec is not None and ((force_keyframe and settings.pli == "honour") or periodic_due):
            self.codec = None
            KEYFRAMES.forced_idrs += 1
        if self.codec is None:
            self._standin_last_open = now
            KEYFRAMES.encoder_opens += 1
        return original_encode_frame(self, frame, force_keyframe)

    h264.H264Encoder._encode_frame = encode_frame_with_keyframe_policy


def set_ice_consent_interval(seconds: Optional[float]) -> None:
    """aioice checks consent every ~5 s and gives up after 6 misses (each waits 0.5 s for an answer).
    That is the only way this server (like ComfyStream on aiortc) learns that a peer went away, so
    tests may shorten it."""
    if seconds is not None:
        aioice.ice.CONSENT_INTERVAL = seconds


def restrict_ice_host_addresses(addresses: List[str]) -> None:
    """aioice gathers a host candidate on every interface address except 127.0.0.1; pin it to ours."""
    if not addresses:
        return

    def only_configured_addresses(use_ipv4: bool, use_ipv6: bool) -> List[str]:
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = only_configured_addresses


# ---------------------------------------------------------------------------------------------------
# Prompts: a light version of ComfyStream's convert_prompt node-count rules.
# ---------------------------------------------------------------------------------------------------


class PromptError(Exception):
    pass


def normalise_prompts(raw: Any) -> List[Dict[str, Any]]:
    """A single workflow or a list of workflows -> a list; None/[] -> [] (noop mode)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [raw]
    if isinstance(raw, list):
        return raw
    raise PromptError(f"prompts must be a workflow object or a list of them, got {type(raw).__name__}")


def validate_workflow(workflow: Any) -> None:
    if not isinstance(workflow, dict) or not workflow:
        raise PromptError("a workflow must be a non-empty object of nodes")
    primary_inputs = other_inputs = outputs = 0
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise PromptError(f"node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs", {}), dict):
            raise PromptError(f"node {node_id!r} has inputs that are not an object")
        class_type = node["class_type"]
        if class_type == "PrimaryInputLoadImage":
            primary_inputs += 1
        elif class_type in INPUT_NODE_TYPES:
            other_inputs += 1
        elif class_type in OUTPUT_NODE_TYPES:
            outputs += 1
    if primary_inputs > 1:
        raise PromptError("at most one PrimaryInputLoadImage node is allowed")
    if primary_inputs == 0 and other_inputs > 2:
        raise PromptError("at most two input nodes are allowed without a PrimaryInputLoadImage")
    if outputs > 3:
        raise PromptError("at most three output nodes are allowed")
    if primary_inputs + other_inputs == 0:
        raise PromptError("the workflow has no input node")
    if outputs == 0:
        raise PromptError("the workflow has no output node")


def nodes_info(prompts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The get_nodes reply body, built from the workflows (no real node metadata is available here)."""
    info: Dict[str, Any] = {}
    for index, workflow in enumerate(prompts):
        nodes: Dict[str, Any] = {}
        for node_id, node in workflow.items():
            inputs = {
                name: {"value": value, "type": "unknown", "min": None, "max": None, "widget": None}
                for name, value in node.get("inputs", {}).items()
            }
            nodes[node_id] = {"class_type": node["class_type"], "inputs": inputs}
        info[str(index)] = nodes
    return info


# ---------------------------------------------------------------------------------------------------
# The single global pipeline, shared by every peer as in ComfyStream.
# ---------------------------------------------------------------------------------------------------


class FpsMeter:
    """Output frames per second, the fields of ComfyStream's /streams/stats."""

    def __init__(self) -> None:
        self.frame_times: Deque[float] = deque()

    def record(self) -> None:
        now = time.time()
        self.frame_times.append(now)
        while self.frame_times and now - self.frame_times[0] > 60:
            self.frame_times.popleft()

    def snapshot(self) -> Dict[str, Any]:
        now = time.time()
        per_second = [0] * 60
        for t in self.frame_times:
            age = int(now - t)
            if 0 <= age < 60:
                per_second[59 - age] += 1
        seconds_seen = min(60, max(1, int(now - self.frame_times[0]) + 1)) if self.frame_times else 1
        return {
            "timestamp": now,
            "fps": per_second[-1] if per_second[-1] else per_second[-2],
            "minute_avg_fps": sum(per_second) / seconds_seen,
            "minute_fps_array": per_second,
        }


@dataclass
class Counters:
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0  # evicted from the 1-slot input buffer before processing
    offers_received: int = 0
    offers_failed: int = 0
    peers_served: int = 0
    prompt_updates: int = 0
    control_messages: int = 0
    last_control_replies: List[Dict[str, Any]] = field(default_factory=list)


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prompts: List[Dict[str, Any]] = []
        self.prompts_source: Optional[str] = None
        # uninitialized -> ready -> streaming <-> paused/stopped; cleanup goes back to uninitialized
        self.state = "uninitialized"
        self.width = 512
        self.height = 512
        maxlen = 1 if settings.queue == "latest" else None
        self.frames: Deque[av.VideoFrame] = deque(maxlen=maxlen)
        self.changed = asyncio.Event()
        self.next_processing_time = 0.0
        self.counters = Counters()
        self.last_frame_means: Optional[Dict[str, List[float]]] = None

    async def apply_prompts(self, raw_prompts: Any, source: str) -> None:
        prompts = normalise_prompts(raw_prompts)
        if self.settings.fail_prompts:
            raise PromptError("--fail-prompts is set: rejecting the workflow")
        for workflow in prompts:
            validate_workflow(workflow)
        # ComfyStream warms up inside the request (5 runs on dummy frames of width x height).
        if self.settings.warmup_ms > 0:
            await asyncio.sleep(self.settings.warmup_ms / 1000)
        self.prompts = prompts
        self.prompts_source = source
        self.state = "ready"
        self.changed.set()

    async def update_prompts(self, raw_prompts: Any) -> None:
        if raw_prompts is None:
            raise PromptError("missing prompts")
        prompts = normalise_prompts(raw_prompts)
        if len(prompts) != len(self.prompts):
            raise PromptError(f"expected {len(self.prompts)} prompts (as loaded), got {len(prompts)}")
        if self.settings.fail_prompts:
            raise PromptError("--fail-prompts is set: rejecting the workflow")
        for workflow in prompts:
            validate_workflow(workflow)
        self.prompts = prompts
        self.prompts_source = "update_prompts"
        self.counters.prompt_updates += 1

    def cleanup(self) -> None:
        """What a peer's failed/closed state does in ComfyStream: tear the runner down for everyone."""
        self.state = "uninitialized"
        self.prompts = []
        self.frames.clear()
        self.changed.set()

    def put_video_frame(self, frame: av.VideoFrame) -> None:
        self.counters.frames_in += 1
        if self.frames.maxlen is not None and len(self.frames) == self.frames.maxlen:
            self.counters.frames_dropped += 1
        self.frames.append(frame)
        self.changed.set()

    def runner_active(self) -> bool:
        return self.state in ("ready", "streaming", "paused", "stopped")

    async def get_processed_video_frame(self) -> av.VideoFrame:
        if self.settings.max_fps:
            # Shared by every output track, like one inference loop serving all peers.
            now = time.monotonic()
            slot = max(now, self.next_processing_time)
            self.next_processing_time = slot + 1 / self.settings.max_fps
            if slot > now:
                await asyncio.sleep(slot - now)
        while not (self.runner_active() and self.frames):
            self.changed.clear()
            await self.changed.wait()
        frame = self.frames.popleft()
        if self.state == "ready":
            self.state = "streaming"
        transform = self.state == "streaming" and self.settings.mode == "filter"
        processed = invert_colours(frame) if transform else frame
        self.counters.frames_out += 1
        if self.counters.frames_out % 10 == 1:
            # Lets a test see what the "workflow" did without decoding the returned video.
            self.last_frame_means = {"input": mean_rgb(frame), "output": mean_rgb(processed)}
        return processed


def mean_rgb(frame: av.VideoFrame) -> List[float]:
    rgb = frame.to_ndarray(format="rgb24")
    return [round(float(v), 1) for v in rgb.reshape(-1, 3).mean(axis=0)]


def invert_colours(frame: av.VideoFrame) -> av.VideoFrame:
    # ComfyStream converts each frame to RGB and builds the output from an rgb24 array; do the same.
    rgb = frame.to_ndarray(format="rgb24")
    out = av.VideoFrame.from_ndarray(numpy.subtract(255, rgb, dtype=numpy.uint8), format="rgb24")
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


# ---------------------------------------------------------------------------------------------------
# Tracks
# ---------------------------------------------------------------------------------------------------


class PipelineVideoTrack(MediaStreamTrack):
    """Feeds every inbound frame to the pipeline and returns processed frames (pipeline mode)."""

    kind = "video"

    def __init__(self, inbound: MediaStreamTrack, pipeline: Pipeline, meter: FpsMeter) -> None:
        super().__init__()
        self.inbound = inbound
        self.pipeline = pipeline
        self.meter = meter
        self.collector = asyncio.ensure_future(self.collect_frames())

    async def collect_frames(self) -> None:
        try:
            while True:
                frame = await self.inbound.recv()
                self.pipeline.put_video_frame(frame)
        except MediaStreamError:
            log.info("inbound video track %s ended", self.inbound.id)

    async def recv(self) -> av.VideoFrame:
        frame = await self.pipeline.get_processed_video_frame()
        self.meter.record()
        return frame

    def stop(self) -> None:
        self.collector.cancel()
        super().stop()


class NoopVideoTrack(MediaStreamTrack):
    """No prompts: return inbound frames unchanged; like ComfyStream, a 5 s stall raises and ends it."""

    kind = "video"

    def __init__(self, inbound: MediaStreamTrack, pipeline: Pipeline, meter: FpsMeter) -> None:
        super().__init__()
        self.inbound = inbound
        self.pipeline = pipeline
        self.meter = meter

    async def recv(self) -> av.VideoFrame:
        frame = await asyncio.wait_for(self.inbound.recv(), NOOP_RECV_TIMEOUT_S)
        self.pipeline.counters.frames_in += 1
        self.pipeline.counters.frames_out += 1
        self.meter.record()
        return frame


class AudioPassthroughTrack(MediaStreamTrack):
    """Audio comes back unchanged, or as a pts-less silence frame (which kills the sender) after 1 s."""

    kind = "audio"

    def __init__(self, inbound: MediaStreamTrack) -> None:
        super().__init__()
        self.inbound = inbound

    async def recv(self) -> av.AudioFrame:
        try:
            return await asyncio.wait_for(self.inbound.recv(), AUDIO_SILENCE_AFTER_S)
        except asyncio.TimeoutError:
            silence = av.AudioFrame(format="s16", layout="mono", samples=SILENCE_SAMPLES)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = SILENCE_RATE
            silence.time_base = fractions.Fraction(1, SILENCE_RATE)
            silence.pts = None  # as ComfyStream's: the sender's timestamp arithmetic fails on it
            return silence


# ---------------------------------------------------------------------------------------------------
# Signalling and peers
# ---------------------------------------------------------------------------------------------------


def prefer_codec(pc: RTCPeerConnection, sender: RTCRtpSender, mime_type: str) -> None:
    kind = mime_type.split("/")[0]
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == mime_type]
    for transceiver in pc.getTransceivers():
        if transceiver.sender is sender:
            transceiver.setCodecPreferences(codecs)


@dataclass
class Peer:
    number: int
    pc: RTCPeerConnection
    video_input_track_id: Optional[str] = None
    control_channel_open: bool = False
    output_tracks: List[MediaStreamTrack] = field(default_factory=list)


class StandIn:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings)
        self.peers: Dict[int, Peer] = {}
        self.peer_history: Deque[Dict[str, Any]] = deque(maxlen=20)
        self.meters: Dict[str, FpsMeter] = {}
        self.next_peer_number = 1
        self.background: Set[asyncio.Task[Any]] = set()

    # -- HTTP ---------------------------------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.Response:
        # ComfyStream answers the literal text OK labelled as JSON; keep that quirk.
        return web.Response(text="OK", content_type="application/json")

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.pipeline.apply_prompts(body, "prompt route")
        return web.Response(text="OK", content_type="application/json")

    async def offer(self, request: web.Request) -> web.Response:
        counters = self.pipeline.counters
        counters.offers_received += 1
        try:
            return await self.handle_offer(await request.json())
        except Exception:
            counters.offers_failed += 1
            log.exception("POST /offer failed")
            # Re-raised on purpose: like ComfyStream, aiohttp's default 500 text/plain page is the answer.
            raise

    async def handle_offer(self, params: Dict[str, Any]) -> web.Response:
        prompts = normalise_prompts(params.get("prompts"))
        resolution = params.get("resolution")
        if isinstance(resolution, dict):
            self.pipeline.width = int(resolution["width"])
            self.pipeline.height = int(resolution["height"])
        noop = not prompts
        if not noop:
            await self.pipeline.apply_prompts(prompts, "offer")

        offer = RTCSessionDescription(sdp=params["offer"]["sdp"], type=params["offer"]["type"])
        pc = RTCPeerConnection()
        peer = Peer(number=self.next_peer_number, pc=pc)
        self.next_peer_number += 1
        self.peers[peer.number] = peer

        if "m=video" in offer.sdp:
            video = pc.addTransceiver("video", direction="sendrecv")
            prefer_codec(pc, video.sender, "video/H264")
        if "m=audio" in offer.sdp:
            audio = pc.addTransceiver("audio", direction="sendrecv")
            prefer_codec(pc, audio.sender, "audio/opus")

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == "control":
                self.attach_control_channel(peer, channel)
            # "data" only ever carries server -> client text output, which no workflow here produces.

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if any(t.kind == track.kind for t in peer.output_tracks):
                return  # only the first track of each kind is used
            if track.kind == "video":
                peer.video_input_track_id = track.id
                meter = self.meters.setdefault(track.id, FpsMeter())
                output: MediaStreamTrack
                if noop:
                    output = NoopVideoTrack(track, self.pipeline, meter)
                else:
                    output = PipelineVideoTrack(track, self.pipeline, meter)
                sender = pc.addTrack(output)
                prefer_codec(pc, sender, "video/H264")
            else:
                output = AudioPassthroughTrack(track)
                pc.addTrack(output)
            peer.output_tracks.append(output)

        @pc.on("connectionstatechange")
        async def on_connection_state() -> None:
            log.info("peer %d connection state %s", peer.number, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.end_peer(peer)

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        self.pipeline.counters.peers_served += 1
        log.info("peer %d answered (%s mode)", peer.number, "noop" if noop else "pipeline")
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def end_peer(self, peer: Peer) -> None:
        if self.peers.pop(peer.number, None) is None:
            return
        self.peer_history.append(self.describe_peer(peer))
        for track in peer.output_tracks:
            track.stop()
        await peer.pc.close()
        # ComfyStream stops the shared pipeline here, which also stalls any other live peer.
        self.pipeline.cleanup()

    # -- control channel ----------------------------------------------------------------------------

    def attach_control_channel(self, peer: Peer, channel: Any) -> None:
        peer.control_channel_open = True

        @channel.on("message")
        def on_message(message: Any) -> None:
            task = asyncio.ensure_future(self.handle_control_message(channel, message))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

        @channel.on("close")
        def on_close() -> None:
            peer.control_channel_open = False

    async def handle_control_message(self, channel: Any, message: Any) -> None:
        counters = self.pipeline.counters
        counters.control_messages += 1
        try:
            request = json.loads(message)
        except (TypeError, ValueError):
            log.warning("control: invalid JSON ignored")
            return
        kind = request.get("type") if isinstance(request, dict) else None
        handlers = {
            "get_nodes": self.on_get_nodes,
            "update_prompts": self.on_update_prompts,
            "update_resolution": self.on_update_resolution,
            "pause_prompts": self.on_state_change("pause", "prompts_paused", "paused"),
            "resume_prompts": self.on_state_change("resume", "prompts_resumed", "streaming"),
            "stop_prompts": self.on_state_change("stop", "prompts_stopped", "stopped"),
        }
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            log.warning("control: message without a known type ignored: %r", kind)
            return
        reply = await handler(request)
        counters.last_control_replies = (counters.last_control_replies + [reply])[-10:]
        if channel.readyState == "open":
            channel.send(json.dumps(reply))

    async def on_get_nodes(self, _request: Dict[str, Any]) -> Dict[str, Any]:
        return {"type": "nodes_info", "nodes": nodes_info(self.pipeline.prompts)}

    async def on_update_prompts(self, request: Dict[str, Any]) -> Dict[str, Any]:
        try:
            await self.pipeline.update_prompts(request.get("prompts"))
            return {"type": "prompts_updated", "success": True}
        except PromptError as error:
            return {"type": "prompts_updated", "success": False, "error": str(error)}

    async def on_update_resolution(self, request: Dict[str, Any]) -> Dict[str, Any]:
        width, height = request.get("width"), request.get("height")
        if not isinstance(width, int) or not isinstance(height, int):
            return {"type": "resolution_updated", "success": False, "error": "width and height are required"}
        # As on ComfyStream main: only the next warm-up's size changes; nothing is resized.
        self.pipeline.width, self.pipeline.height = width, height
        return {"type": "resolution_updated", "success": True}

    def on_state_change(self, verb: str, reply_type: str, new_state: str) -> Callable[..., Any]:
        async def handler(_request: Dict[str, Any]) -> Dict[str, Any]:
            if not self.pipeline.runner_active():
                return {"type": reply_type, "success": False, "error": f"cannot {verb}: no prompts are running"}
            self.pipeline.state = new_state
            self.pipeline.changed.set()
            return {"type": reply_type, "success": True}

        return handler

    # -- stats --------------------------------------------------------------------------------------

    def describe_peer(self, peer: Peer) -> Dict[str, Any]:
        return {
            "number": peer.number,
            "connection_state": peer.pc.connectionState,
            "ice_connection_state": peer.pc.iceConnectionState,
            "dtls_states": sorted({t.sender.transport.state for t in peer.pc.getTransceivers() if t.sender.transport}),
            "control_channel_open": peer.control_channel_open,
            "video_input_track_id": peer.video_input_track_id,
        }

    async def stats(self, _request: web.Request) -> web.Response:
        pipeline = self.pipeline
        counters = pipeline.counters
        peers = [self.describe_peer(p) for p in self.peers.values()]
        body = {
            "settings": {
                "mode": self.settings.mode,
                "max_fps": self.settings.max_fps,
                "queue": self.settings.queue,
                "warmup_ms": self.settings.warmup_ms,
                "fail_prompts": self.settings.fail_prompts,
                "pli": self.settings.pli,
                "keyframe_interval_s": self.settings.keyframe_interval_s,
                "ice_consent_interval_s": self.settings.ice_consent_interval_s,
            },
            "pipeline": {
                "state": pipeline.state,
                "width": pipeline.width,
                "height": pipeline.height,
                "prompt_count": len(pipeline.prompts),
                "prompts_source": pipeline.prompts_source,
                "last_prompts": pipeline.prompts,
                "queued_frames": len(pipeline.frames),
                "last_frame_means": pipeline.last_frame_means,
            },
            "frames_in": counters.frames_in,
            "frames_out": counters.frames_out,
            "frames_dropped": counters.frames_dropped,
            "offers_received": counters.offers_received,
            "offers_failed": counters.offers_failed,
            "peers_served": counters.peers_served,
            "prompt_updates": counters.prompt_updates,
            "control_messages": counters.control_messages,
            "last_control_replies": counters.last_control_replies,
            "keyframes": KEYFRAMES.__dict__,
            "peers": peers,
            "current_peer_state": peers[-1]["connection_state"] if peers else None,
            "ended_peers": list(self.peer_history),
        }
        return web.json_response(body)

    async def streams_stats(self, _request: web.Request) -> web.Response:
        return web.json_response({track_id: meter.snapshot() for track_id, meter in self.meters.items()})

    async def stream_stats(self, request: web.Request) -> web.Response:
        meter = self.meters.get(request.match_info["stream_id"])
        if meter is None:
            return web.json_response({"error": "Stream not found"})
        return web.json_response(meter.snapshot())

    # -- app ----------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        for prefix in ("", "/live"):
            app.router.add_get(prefix + "/", self.health)
            app.router.add_get(prefix + "/health", self.health)
            app.router.add_post(prefix + "/offer", self.offer)
            app.router.add_post(prefix + "/prompt", self.prompt)
            app.router.add_get(prefix + "/streams/stats", self.streams_stats)
            app.router.add_get(prefix + "/stream/{stream_id}/stats", self.stream_stats)
            app.router.add_get(prefix + "/stats", self.stats)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def on_shutdown(self, _app: web.Application) -> None:
        for peer in list(self.peers.values()):
            await self.end_peer(peer)


def parse_args(argv: Optional[List[str]] = None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Stand-in ComfyStream WebRTC server (aiohttp + aiortc) for relay tests. "
        "Run it inside a loopback-only network namespace. On start it prints "
        '{"event":"listening","host":...,"port":...} on stdout.'
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8889, help="HTTP port; 0 picks a free one (default 8889)")
    parser.add_argument(
        "--ice-address",
        action="append",
        default=[],
        metavar="ADDR",
        help="gather ICE host candidates only on this address (repeatable; e.g. 127.0.0.2, since aioice "
        "skips 127.0.0.1). Default: every interface address, as ComfyStream does",
    )
    parser.add_argument(
        "--mode",
        choices=("filter", "passthrough"),
        default="filter",
        help="what the 'workflow' does to frames when prompts are loaded: invert colours, or nothing",
    )
    parser.add_argument(
        "--max-fps",
        type=float,
        default=None,
        metavar="N",
        help="cap processing at N frames/s; with --queue latest, frames arriving faster are dropped",
    )
    parser.add_argument(
        "--queue",
        choices=("latest", "backlog"),
        default="latest",
        help="input buffer: 'latest' keeps only the newest frame (ComfyStream's maxsize=1 queue); "
        "'backlog' keeps all of them, reproducing the growing delay of ComfyStream main (spec §1.4)",
    )
    parser.add_argument("--warmup-ms", type=int, default=0, metavar="N", help="delay inside /offer when prompts are applied")
    parser.add_argument(
        "--fail-prompts",
        action="store_true",
        help="reject every workflow: /offer with prompts and /prompt answer 500, update_prompts fails",
    )
    parser.add_argument(
        "--pli",
        choices=("honour", "ignore"),
        default="honour",
        help="'honour' answers a PLI with an IDR, as current aiortc (ComfyStream) does; 'ignore' keeps "
        "Debian aiortc 1.4.0's behaviour (IDRs only every 250 frames)",
    )
    parser.add_argument(
        "--keyframe-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also force an IDR this often, whatever the PLIs (not something ComfyStream does)",
    )
    parser.add_argument(
        "--ice-consent-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="aioice's consent-check interval (default 5 s, so a vanished peer is noticed after ~30 s; "
        "aiortc 1.4.0 does not end the connection when the peer closes). Shorten it in tests",
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="shut down when the parent process goes away (so a killed test run leaves no server behind)",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    args = parser.parse_args(argv)
    if args.max_fps is not None and args.max_fps <= 0:
        parser.error("--max-fps must be positive")
    if args.ice_consent_interval is not None and args.ice_consent_interval <= 0:
        parser.error("--ice-consent-interval must be positive")
    if args.keyframe_interval is not None and args.keyframe_interval <= 0:
        parser.error("--keyframe-interval must be positive")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Settings(
        host=args.host,
        port=args.port,
        ice_addresses=args.ice_address,
        mode=args.mode,
        max_fps=args.max_fps,
        queue=args.queue,
        warmup_ms=args.warmup_ms,
        fail_prompts=args.fail_prompts,
        pli=args.pli,
        keyframe_interval_s=args.keyframe_interval,
        ice_consent_interval_s=args.ice_consent_interval,
        exit_with_parent=args.exit_with_parent,
    )


async def stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1)
    log.warning("parent process %d went away", parent)
    stop.set()


async def serve(settings: Settings) -> None:
    install_encoder_patches(settings)
    restrict_ice_host_addresses(settings.ice_addresses)
    set_ice_consent_interval(settings.ice_consent_interval_s)
    standin = StandIn(settings)
    runner = web.AppRunner(standin.make_app())
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(json.dumps({"event": "listening", "host": host, "port": port}), flush=True)
    log.info("listening on http://%s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if settings.exit_with_parent:
        watcher = asyncio.ensure_future(stop_when_orphaned(stop))
    await stop.wait()
    log.info("shutting down")
    if settings.exit_with_parent:
        watcher.cancel()
    await runner.cleanup()


def main() -> None:
    settings = parse_args()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
