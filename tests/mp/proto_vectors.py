# Protocol test vectors checker. Runs unchanged under MicroPython (as a script) and CPython
# (imported by tests/test_protocol.py, which passes in sicell.protocol's modules).
import json
import sys


def _field(v):
    if isinstance(v, str) and v.startswith("hex:"):
        return bytes.fromhex(v[4:])
    return v


def run(framing, messages, schedule, vectors):
    """Check every vector; return (passed, list of failure strings)."""
    fails = []
    passed = 0
    for c in vectors["crc16"]:
        got = framing.crc16(bytes.fromhex(c["data"]))
        if got != c["crc"]:
            fails.append("crc16 " + c["data"] + " got " + str(got))
        else:
            passed += 1
    buf = bytearray(1024)
    out = bytearray(1024)
    for c in vectors["cobs"]:
        raw = bytes.fromhex(c["raw"])
        n = framing.cobs_encode_into(raw, len(raw), buf, 0)
        m = framing.cobs_decode_into(bytes.fromhex(c["enc"]), len(c["enc"]) // 2, out)
        if bytes(buf[:n]).hex() != c["enc"] or bytes(out[:m]) != raw:
            fails.append("cobs " + c["raw"][:16])
        else:
            passed += 1
    enc = framing.Encoder()
    dec = framing.Deframer()
    stream = bytearray()
    for v in vectors["frames"]:
        t = v["type"]
        fields = tuple(_field(f) for f in v["fields"])
        tail = bytes.fromhex(v["tail"])
        wire = bytes.fromhex(v["frame"])
        stream += wire
        payload = messages.pack(t, *fields) + tail
        got = bytes(enc.encode(t, v["seq"], payload))
        if got != wire:
            fails.append("encode " + v["name"] + " seq " + str(v["seq"]))
            continue
        ver, t2, seq2, pl = framing.decode_frame(wire)
        if t2 != t or seq2 != v["seq"] or ver != framing.VERSION_BYTE:
            fails.append("decode header " + v["name"])
            continue
        if tuple(messages.unpack(t, pl)) != fields or bytes(messages.tail(t, pl)) != tail:
            fails.append("decode fields " + v["name"])
            continue
        passed += 1
    # the same frames back to back through the streaming decoder, fed in 7-byte chunks
    seen = []
    pos = 0
    while pos < len(stream):
        chunk = stream[pos : pos + 7]
        i = 0
        while i < len(chunk):
            i = dec.push(chunk, i)
            if dec.ready:
                seen.append((dec.type, dec.seq, bytes(dec.payload)))
        pos += 7
    want = [(v["type"], v["seq"]) for v in vectors["frames"]]
    if [(a, b) for a, b, _ in seen] != want or dec.errors:
        fails.append("stream decode: got " + str(len(seen)) + " frames, errors " + str(dec.errors))
    else:
        passed += 1
    blob = bytes.fromhex(vectors["schedule"]["blob"])
    header, steps = schedule.decode(blob)
    if len(steps) != vectors["schedule"]["n_steps"] or schedule.encode(header, steps) != blob:
        fails.append("schedule round trip")
    else:
        passed += 1
    return passed, fails


def main(path):
    from protocol import framing, messages, schedule

    with open(path) as f:
        vectors = json.load(f)
    passed, fails = run(framing, messages, schedule, vectors)
    for f in fails:
        print("FAIL", f)
    print("vectors:", passed, "passed,", len(fails), "failed")
    if fails:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "protocol/vectors.json")
