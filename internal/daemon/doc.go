// Package daemon runs sgd: the lifecycle around the controller. It loads the config
// through the controller, refuses one that filters nothing (safe.go), opens the queues,
// adopts the host's established connections, has the controller install the netfilter
// rules and follow the host's devices, reloads on SIGHUP or a change of the file, serves
// metrics and status, and removes its rules on a clean stop.
package daemon
