// Package daemon runs sgd: the lifecycle around the controller. It loads the config
// through the controller, opens the queues, has the controller install the netfilter
// rules, reloads on SIGHUP or a change of the file, serves metrics and status, and
// removes its rules on a clean stop.
package daemon
