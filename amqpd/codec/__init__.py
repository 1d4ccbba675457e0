"""Sans-I/O wire codec: bytes in, frames out; frames in, bytes out.

pamqp handles every method; the hot frames (basic.publish, content header,
body, basic.deliver, basic.ack) have a fast path here that keeps the content
header as raw bytes.
"""
