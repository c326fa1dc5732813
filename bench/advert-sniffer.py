#!/usr/bin/env python3
"""Prints one line per failover advert seen on an interface: "<epoch ms> <source IPv4> vrrp|udp".

bench/failover.mjs runs it in the backup's namespace to learn when the backup last heard the master before a
fault, so that the takeover can be timed from that advert (the detection delay proper) and not only from the
fault, which falls at a random point of the advert interval. Python because it needs a raw packet socket
(AF_PACKET), which Node has no API for and tcpdump is not installed here.

    advert-sniffer.py IFACE UDP_PORT     (root; stops on SIGTERM or when stdout closes)
"""
import socket
import struct
import sys
import time

iface, udp_port = sys.argv[1], int(sys.argv[2])
ETH_P_IP = 0x0800
sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
sock.bind((iface, ETH_P_IP))
while True:
    packet = sock.recv(2048)  # SOCK_DGRAM: the link-layer header is already stripped
    now_ms = time.time() * 1000
    if len(packet) < 20:
        continue
    header_len = (packet[0] & 0x0F) * 4
    proto = packet[9]
    src = socket.inet_ntoa(packet[12:16])
    kind = None
    if proto == 112:  # VRRP (keepalived)
        kind = 'vrrp'
    elif proto == 17 and len(packet) >= header_len + 4:
        dst_port = struct.unpack('!H', packet[header_len + 2:header_len + 4])[0]
        if dst_port == udp_port:  # mqtt-lb's adverts
            kind = 'udp'
    if kind is not None:
        try:
            sys.stdout.write(f'{now_ms:.1f} {src} {kind}\n')
            sys.stdout.flush()
        except BrokenPipeError:
            break
