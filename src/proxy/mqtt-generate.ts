/**
 * mqtt-packet's packet writer, as this program uses it: every import of `generate` goes through here.
 *
 * On its first `generate`, mqtt-packet builds a cache of 65,536 two-byte Buffers (every 16-bit number) that
 * stays for the life of the process: 65,536 objects in the old generation (a heap snapshot's largest item,
 * ~6 MiB) that every full garbage collection marks again. We write a handful of packets (the CONNACK replies
 * once at load, one CONNECT per MQTT health probe), so the numbers are encoded as needed instead
 * (`writeToStream.cacheNumbers`, mqtt-packet's documented switch, set before any packet is written).
 */
import mqttPacket from 'mqtt-packet';

mqttPacket.writeToStream.cacheNumbers = false;

export const generate = mqttPacket.generate;
