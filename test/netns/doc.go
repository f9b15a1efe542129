// Package netns holds sgd's end-to-end tests: they build the sgd binary, run it inside a
// network namespace joined to others through a bridge, and check Security Group behaviour
// over real sockets (timeouts versus refusals, replies of tracked flows, fail-closed after
// SIGKILL, clean removal of every rule). They need root and iproute2/iptables, and skip
// otherwise; only documentation addresses (192.0.2.0/24, 2001:db8::/64) are used.
package netns
