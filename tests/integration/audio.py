"""Test tones and tone detection on WAV files, in pure Python (standard library only: no numpy, no sox).

    write_tone(path, 440, seconds=60)            # 8 kHz mono S16LE sine, what baresip's aufile source wants
    write_tone(path, 1000, rate=48000)            # for Chromium's --use-file-for-fake-audio-capture
    write_ulaw_tone(path, 440, seconds=10)        # headerless 8 kHz G.711 u-law, for sipp's rtp_stream
    dominant_frequency(path)                      # e.g. 439.6 (median over the non-silent windows), or None
    has_tone(path, 440, tolerance=15)             # True when most non-silent windows peak near 440 Hz
    tone_report(path)                             # what has_tone saw, for assertion messages

Analysis: the file is cut into windows (0.25 s by default); windows quieter than `min_rms` are skipped (a call
recording starts and ends with silence); each remaining window gets a Hann-windowed radix-2 FFT, and its
strongest bin in [low, high] Hz, refined by parabolic interpolation, is that window's dominant frequency.
`tone_level(path, hz)` is a Goertzel check of how much of the signal's energy sits at one frequency.
"""

from __future__ import annotations

import array
import cmath
import math
import statistics
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

FULL_SCALE = 32768.0


# --- making tones ---

def write_tone(path: str | Path, hz: float, seconds: float = 10.0, rate: int = 8000, channels: int = 1,
               amplitude: float = 0.5) -> Path:
    """A sine of `hz` Hz as a 16-bit PCM WAV (`amplitude` of full scale); returns the path."""
    path = Path(path)
    total = int(round(seconds * rate))
    # when rate/hz is rational with a short period, compute one period and repeat it (fast for long files)
    period = _period(hz, rate)
    count = period if period and period <= rate else total
    one = array.array("h", (int(round(amplitude * 32767 * math.sin(2 * math.pi * hz * n / rate)))
                            for n in range(count)))
    samples = array.array("h")
    while len(samples) < total:
        samples.extend(one)
    del samples[total:]
    if channels > 1:
        interleaved = array.array("h", bytes(2 * total * channels))
        for channel in range(channels):
            interleaved[channel::channels] = samples
        samples = interleaved
    _write(path, samples, rate, channels)
    return path


def write_silence(path: str | Path, seconds: float = 10.0, rate: int = 8000, channels: int = 1) -> Path:
    path = Path(path)
    _write(path, array.array("h", bytes(2 * int(round(seconds * rate)) * channels)), rate, channels)
    return path


def write_ulaw_tone(path: str | Path, hz: float, seconds: float = 10.0, amplitude: float = 0.5) -> Path:
    """A sine of `hz` Hz as raw 8 kHz G.711 u-law bytes, no header (sipp's `rtp_stream=FILE,LOOPS,0` plays them
    as PCMU payload as they are); returns the path."""
    path = Path(path)
    path.write_bytes(bytes(_ulaw(int(round(amplitude * 32767 * math.sin(2 * math.pi * hz * n / 8000))))
                           for n in range(int(round(seconds * 8000)))))
    return path


def _ulaw(sample: int) -> int:
    """One 16-bit linear sample as a G.711 u-law byte (ITU-T G.711, with the usual 0x84 bias and 32635 clip)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)  # the segment: position of the highest bit above bit 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _period(hz: float, rate: int) -> int | None:
    if hz != int(hz):
        return None
    return rate // math.gcd(int(hz), rate)


def _write(path: Path, samples: array.array, rate: int, channels: int) -> None:
    if sys.byteorder != "little":
        samples = array.array("h", samples)
        samples.byteswap()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


# --- reading ---

@dataclass
class Audio:
    rate: int
    samples: array.array  # mono (channels averaged), floats in [-1, 1]

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0


def read_wav(path: str | Path) -> Audio:
    """A PCM WAV file (8, 16, 24 or 32 bit, any channel count) as mono floats."""
    with wave.open(str(path), "rb") as source:
        rate, channels, width = source.getframerate(), source.getnchannels(), source.getsampwidth()
        data = source.readframes(source.getnframes())
    if width == 1:
        values = array.array("f", ((b - 128) / 128.0 for b in data))
    elif width == 2:
        ints = array.array("h", data[: len(data) // 2 * 2])
        if sys.byteorder != "little":
            ints.byteswap()
        values = array.array("f", (v / FULL_SCALE for v in ints))
    elif width == 3:
        values = array.array("f", (int.from_bytes(data[i:i + 3], "little", signed=True) / 8388608.0
                                   for i in range(0, len(data) - 2, 3)))
    elif width == 4:
        ints = array.array("i", data[: len(data) // 4 * 4])
        if sys.byteorder != "little":
            ints.byteswap()
        values = array.array("f", (v / 2147483648.0 for v in ints))
    else:
        raise ValueError(f"{path}: unsupported sample width {width}")
    if channels > 1:
        frames = len(values) // channels
        values = array.array("f", (sum(values[f * channels:(f + 1) * channels]) / channels for f in range(frames)))
    return Audio(rate, values)


# --- analysis ---

def _fft(values: list[complex]) -> list[complex]:
    """In-place iterative radix-2 FFT (len must be a power of two)."""
    n = len(values)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            values[i], values[j] = values[j], values[i]
    size = 2
    while size <= n:
        step = cmath.exp(-2j * math.pi / size)
        half = size // 2
        twiddles = [step ** k for k in range(half)]
        for start in range(0, n, size):
            for k in range(half):
                a = values[start + k]
                b = values[start + k + half] * twiddles[k]
                values[start + k] = a + b
                values[start + k + half] = a - b
        size *= 2
    return values


def _rms(samples: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in samples) / len(samples)) if len(samples) else 0.0


def peak_frequency(samples: Sequence[float], rate: int, low: float = 50.0, high: float = 4000.0) -> float:
    """The strongest frequency of one window of samples (FFT over the next power of two, zero padded)."""
    n = 1
    while n < len(samples):
        n *= 2
    count = len(samples)
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * i / (count - 1)) for i in range(count)] if count > 1 else [1.0]
    spectrum = _fft([complex(samples[i] * hann[i]) for i in range(count)] + [0j] * (n - count))
    magnitudes = [abs(c) for c in spectrum[: n // 2 + 1]]
    first = max(1, int(math.floor(low * n / rate)))
    last = min(n // 2 - 1, int(math.ceil(high * n / rate)))
    best = max(range(first, last + 1), key=magnitudes.__getitem__)
    # parabolic interpolation on the log magnitudes around the peak bin
    a, b, c = (math.log(magnitudes[k] + 1e-12) for k in (best - 1, best, best + 1))
    denominator = a - 2 * b + c
    offset = 0.5 * (a - c) / denominator if denominator else 0.0
    return (best + max(-0.5, min(0.5, offset))) * rate / n


def goertzel_power(samples: Sequence[float], rate: int, hz: float) -> float:
    """Normalised power at `hz`: about 1.0 for a pure sine of that frequency, about 0 when it is absent."""
    n = len(samples)
    if n == 0:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
    energy = sum(x * x for x in samples)
    return 2 * power / (n * energy) if energy else 0.0


@dataclass
class ToneReport:
    path: str
    rate: int
    seconds: float
    windows: int                          # analysed windows in total
    loud: list[tuple[float, float, float]] = field(default_factory=list)  # (start s, rms, dominant Hz)

    @property
    def frequencies(self) -> list[float]:
        return [hz for _, _, hz in self.loud]

    @property
    def dominant(self) -> float | None:
        return statistics.median(self.frequencies) if self.loud else None

    def fraction_near(self, hz: float, tolerance: float) -> float:
        if not self.loud:
            return 0.0
        return sum(1 for f in self.frequencies if abs(f - hz) <= tolerance) / len(self.loud)

    def __str__(self) -> str:
        peaks = ", ".join(f"{t:.2f}s:{f:.0f}Hz" for t, _, f in self.loud[:12])
        more = " ..." if len(self.loud) > 12 else ""
        dominant = "none" if self.dominant is None else f"{self.dominant:.1f} Hz"
        return (f"{self.path}: {self.seconds:.2f} s at {self.rate} Hz, {len(self.loud)}/{self.windows} non-silent "
                f"windows, dominant {dominant} [{peaks}{more}]")


def tone_report(path: str | Path, window: float = 0.25, min_rms: float = 0.01, low: float = 50.0,
                high: float = 4000.0, max_windows: int = 40) -> ToneReport:
    """Per-window dominant frequencies of the non-silent parts of a WAV file (at most `max_windows` windows,
    spread evenly over the file)."""
    audio = read_wav(path)
    size = max(16, int(window * audio.rate))
    starts = list(range(0, len(audio.samples) - size + 1, size))
    if len(starts) > max_windows:
        stride = len(starts) / max_windows
        starts = [starts[int(i * stride)] for i in range(max_windows)]
    report = ToneReport(str(path), audio.rate, audio.seconds, len(starts))
    for start in starts:
        chunk = audio.samples[start:start + size]
        level = _rms(chunk)
        if level < min_rms:
            continue
        report.loud.append((start / audio.rate, level, peak_frequency(chunk, audio.rate, low, high)))
    return report


def dominant_frequency(path: str | Path, **options: float) -> float | None:
    """Median dominant frequency (Hz) of the non-silent windows of a WAV file; None if it is all silence."""
    return tone_report(path, **options).dominant  # type: ignore[arg-type]


def has_tone(path: str | Path, hz: float, tolerance: float = 15.0, min_fraction: float = 0.6,
             min_seconds: float = 0.5, **options: float) -> bool:
    """True when at least `min_seconds` of the file are non-silent and at least `min_fraction` of those
    windows have their dominant frequency within `tolerance` Hz of `hz`."""
    report = tone_report(path, **options)  # type: ignore[arg-type]
    window = options.get("window", 0.25)
    return len(report.loud) * window >= min_seconds and report.fraction_near(hz, tolerance) >= min_fraction


def tone_level(path: str | Path, hz: float, seconds: float = 1.0, min_rms: float = 0.01) -> float:
    """Goertzel: the share of the energy at `hz` (0..1) in the first `seconds` of non-silent audio."""
    audio = read_wav(path)
    size = int(0.05 * audio.rate)
    start = 0
    while start + size <= len(audio.samples) and _rms(audio.samples[start:start + size]) < min_rms:
        start += size
    chunk = audio.samples[start:start + int(seconds * audio.rate)]
    return goertzel_power(chunk, audio.rate, hz)
