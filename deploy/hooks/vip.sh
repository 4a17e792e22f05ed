#!/bin/sh
# topoha on_role_change hook: holds a VIP on this host while this host's DC is the primary DC.
#
#   /etc/topoha/config.yaml    failover: {hooks: {on_role_change: [/usr/local/libexec/topoha/vip.sh]}}
#   /etc/topoha/topoha.env     VIP_ADDRESS=10.0.0.50/32  VIP_INTERFACE=eth0
#   systemd                    deploy/systemd/topoha.service.d/vip-hook.conf (CAP_NET_ADMIN, CAP_NET_RAW)
#   packages                   iproute2, iputils-arping
#
# This hook or keepalived (keepalived.conf.example)? Use this hook when one host per DC carries the VIP
# (for example an LVS director): the VIP moves exactly when topoha's primary record changes, and stays put
# if the controller dies. topoha runs on_role_change on every controller, so two hosts of one DC running
# it would both add the address: with several hosts per DC, let keepalived pick one holder by VRRP.
#
# topoha runs the hook again with the same role at every controller start, so every step checks before it
# acts; it only takes roles from a primary record some etcd answered with, so a host that rebooted during
# a partition does not grab the VIP on a guess.
set -eu

die() {
	echo "vip.sh: $*" >&2
	exit 2
}

[ -n "${TOPOHA_ROLE:-}" ] || die "TOPOHA_ROLE is not set: configure this script as failover.hooks.on_role_change"
[ -n "${VIP_ADDRESS:-}" ] || die "VIP_ADDRESS is not set: add e.g. VIP_ADDRESS=10.0.0.50/32 to /etc/topoha/topoha.env"
[ -n "${VIP_INTERFACE:-}" ] || die "VIP_INTERFACE is not set: add e.g. VIP_INTERFACE=eth0 to /etc/topoha/topoha.env"
case $VIP_ADDRESS in
*/*) ;;
*) die "VIP_ADDRESS=$VIP_ADDRESS has no prefix length: write it as $VIP_ADDRESS/32 (ip addr del needs the same prefix as add)" ;;
esac
addr=${VIP_ADDRESS%/*}

# A plain assignment, so that set -e stops here if the interface does not exist.
held=$(ip -o addr show dev "$VIP_INTERFACE" to "$addr")

case $TOPOHA_ROLE in
primary)
	if [ -z "$held" ]; then
		ip addr add "$VIP_ADDRESS" dev "$VIP_INTERFACE"
		echo "vip.sh: added $VIP_ADDRESS on $VIP_INTERFACE (primary, epoch ${TOPOHA_EPOCH:-?})"
	else
		echo "vip.sh: $VIP_ADDRESS already on $VIP_INTERFACE"
	fi
	# Gratuitous ARP every time, not only when added: switches and the LVS director may still point at the
	# old holder's MAC for minutes.
	arping -q -U -c 3 -I "$VIP_INTERFACE" "$addr"
	;;
dr)
	if [ -n "$held" ]; then
		ip addr del "$VIP_ADDRESS" dev "$VIP_INTERFACE"
		echo "vip.sh: removed $VIP_ADDRESS from $VIP_INTERFACE (dr, epoch ${TOPOHA_EPOCH:-?})"
	else
		echo "vip.sh: $VIP_ADDRESS not on $VIP_INTERFACE"
	fi
	;;
*)
	die "TOPOHA_ROLE=$TOPOHA_ROLE: expected primary or dr"
	;;
esac
