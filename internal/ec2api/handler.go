// Package ec2api serves the EC2 Query API for sgd's Security Groups (SPEC 4.4): the real
// AWS CLI and SDKs create, describe, authorize, revoke and delete groups, rules, tags and
// prefix lists against it, signed with AWS Signature Version 4, and every change goes
// through the controller — validated with the config file's state, published to the packet
// path, and only then stored.
//
// The handler reads the running model (rules.Model, every source's groups: what is in
// force) to describe groups and rules, and the API's store (store.Source) for what only
// the API holds (tags, prefix list versions). Groups of the config file are described
// like the API's own and refused, with OperationNotPermitted, to every change.
package ec2api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/awsjson"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

// APIVersion is the EC2 API version the handler speaks (and the XML namespace's).
const APIVersion = "2016-11-15"

const xmlns = "http://ec2.amazonaws.com/doc/" + APIVersion + "/"

// maxBody bounds a request's body (EC2 itself allows requests of some hundreds of KiB).
const maxBody = 1 << 20

// Options configure the handler.
type Options struct {
	// Store is the API's state, read for Describe*: the source the controller reads.
	Store *store.Source
	// Apply runs a change through the controller and commits it (store.Source.Applier).
	Apply store.ApplyFunc
	// Running returns the model in force (the controller's running state's Model); nil
	// before the controller started, when every call is refused as InternalError.
	Running func() *rules.Model
	// Credentials are the keys requests are signed with (LoadCredentials).
	Credentials Credentials
	// Interfaces, when set, lists this host's interfaces and ports for
	// DescribeNetworkInterfaces beyond those in the running model. Nil: the model's.
	Interfaces func() []Interface
	// HostID is, in fleet mode, this host's id (daemon.etcd.host_id): its interfaces' ENI
	// ids are derived from it and their names (store.InterfaceENI), and their attachments
	// are its own (store.Attachment.Host), so that eth0 of two hosts are two ENIs. "" on a
	// single host: ENI ids from the name alone, attachments as they always were.
	HostID string
	// Members, in fleet mode, returns the fleet's member records (store.MemberSource):
	// DescribeNetworkInterfaces lists the other hosts' interfaces and ports too, and
	// ModifyNetworkInterfaceAttribute on one of them stores an attachment that its own host
	// applies. Nil: this host's interfaces only.
	Members func() []store.Member
	// OwnerID is the account id Describe* shows (default 000000000000); VpcID the VPC
	// id (default vpc-00000000000000sgd) — sgd has one VPC, the host.
	OwnerID, VpcID string
	Log            *zap.Logger // nil: no logs. Keys, secrets and signatures are never logged.
	Metrics        *Metrics    // nil: no metrics
	Now            func() time.Time
}

// Interface is a network interface of this host, as DescribeNetworkInterfaces shows it.
type Interface struct {
	ID        string // eni-…; derived from the name when empty
	Name      string // the Linux device
	Addresses []string
}

// handler is the http.Handler New returns.
type handler struct {
	opt Options
	log *zap.Logger
}

// New returns the EC2 Query API handler. It is safe for concurrent requests; changes are
// serialised by Apply.
func New(opt Options) http.Handler {
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.OwnerID == "" {
		opt.OwnerID = awsjson.DefaultOwnerID
	}
	if opt.VpcID == "" {
		opt.VpcID = awsjson.VpcID
	}
	return &handler{opt: opt, log: opt.Log}
}

// call is one request being served.
type call struct {
	ctx    context.Context
	h      *handler
	q      *query
	action string
	dryRun bool
	model  *rules.Model
	snap   *store.Snapshot
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := newRequestID()
	action := "unknown"
	resp, err := h.serve(r, &action)
	code := "Success"
	if err != nil {
		ae := asAPIError(err)
		code = ae.Code
		if ae.Code == codeInternalError {
			h.log.Error("EC2 API request failed", zap.String("action", action), zap.String("request_id", reqID), zap.String("error", ae.Msg))
		}
		writeXML(w, status(ae.Code), errorResponse{Errors: []xmlError{{Code: ae.Code, Message: ae.Msg}}, RequestID: reqID})
	} else {
		resp.setRequestID(reqID)
		writeXML(w, http.StatusOK, resp)
	}
	h.log.Debug("EC2 API request", zap.String("action", action), zap.String("code", code), zap.String("request_id", reqID), zap.Duration("took", time.Since(start)))
	h.opt.Metrics.observe(action, code, time.Since(start))
}

func (h *handler) serve(r *http.Request, action *string) (response, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, errf(codeMethodNotAllow, "The HTTP method %s is not supported (POST or GET)", r.Method)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, errf(codeInvalidParameterValue, "the request body could not be read (at most %d bytes)", maxBody)
	}
	// Authentication first: nothing of an unsigned request is looked at, not even its
	// action (the metric counts it as "unknown").
	if err := verify(r.Context(), r, body, h.opt.Credentials, h.opt.Now()); err != nil {
		return nil, err
	}
	vals, err := parseParams(r, body)
	if err != nil {
		return nil, err
	}
	q := newQuery(vals)
	name := q.str("Action")
	act, ok := actions[name]
	if name != "" && ok {
		*action = name
	}
	if v := q.str("Version"); v != "" && v != APIVersion {
		return nil, errf(codeInvalidParameterValue, "Version %s is not supported; this endpoint speaks %s", v, APIVersion)
	}
	switch {
	case name == "":
		return nil, errf(codeMissingParameter, "The request must contain the parameter Action")
	case !ok && knownEC2Action(name):
		*action = "unsupported"
		return nil, errf(codeUnsupported, "The action %s is not supported by sgd's EC2 API", name)
	case !ok:
		return nil, errf(codeInvalidAction, "The action %s is not valid for this web service.", name)
	}
	c := &call{ctx: r.Context(), h: h, q: q, action: name}
	if c.dryRun, err = q.boolean("DryRun"); err != nil {
		return nil, err
	}
	if h.opt.Running == nil || h.opt.Store == nil || h.opt.Apply == nil {
		return nil, errf(codeInternalError, "the API is not connected to the controller")
	}
	if c.model = h.opt.Running(); c.model == nil {
		return nil, errf(codeInternalError, "no policy is running yet")
	}
	c.snap = h.opt.Store.Snapshot()
	return act(c)
}

// parseParams reads the request's parameters: the query string, and a form-encoded body.
func parseParams(r *http.Request, body []byte) (url.Values, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errf(codeInvalidParameterValue, "the query string is not URL-encoded parameters")
	}
	if len(body) > 0 {
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, errf(codeInvalidParameterValue, "the body must be application/x-www-form-urlencoded, not %s", ct)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errf(codeInvalidParameterValue, "the body is not URL-encoded parameters")
		}
		for k, v := range form {
			vals[k] = append(vals[k], v...)
		}
	}
	return vals, nil
}

// change runs a mutating action's change through Apply, or, with DryRun, only on a copy:
// a dry run that would get as far as the controller answers DryRunOperation.
func (c *call) change(fn func(*store.Snapshot) error) error {
	if err := c.q.unread(); err != nil {
		return err
	}
	if c.dryRun {
		if err := fn(c.snap.Clone()); err != nil {
			return err
		}
		return errf(codeDryRun, "Request would have succeeded, but DryRun flag is set.")
	}
	err := c.h.opt.Apply(c.ctx, "api "+c.action, fn)
	if err == nil {
		c.model = c.h.opt.Running()
		c.snap = c.h.opt.Store.Snapshot()
	}
	return err
}

// read finishes a read-only action's parameters: unknown ones are refused, and a dry run
// answers DryRunOperation.
func (c *call) read() error {
	if err := c.q.unread(); err != nil {
		return err
	}
	if c.dryRun {
		return errf(codeDryRun, "Request would have succeeded, but DryRun flag is set.")
	}
	return nil
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newID returns prefix + 17 random lower-case hex digits, AWS's id format.
func newID(prefix string) string {
	var b [9]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])[:17]
}

func writeXML(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(&buf).Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(xml.Header + "<Response><Errors><Error><Code>InternalError</Code><Message>encode the response</Message></Error></Errors></Response>")
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// response is an action's XML response; ServeHTTP fills in the request id.
type response interface{ setRequestID(string) }

// base is the part every response has.
type base struct {
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
}

func (b *base) setRequestID(id string) { b.Xmlns, b.RequestID = xmlns, id }

type errorResponse struct {
	XMLName   xml.Name   `xml:"Response"`
	Errors    []xmlError `xml:"Errors>Error"`
	RequestID string     `xml:"RequestID"`
}

type xmlError struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// returnResponse is the response of actions that answer only true.
type returnResponse struct {
	XMLName xml.Name
	base
	Return bool `xml:"return"`
}

func ok(action string) *returnResponse {
	return &returnResponse{XMLName: xml.Name{Local: action + "Response"}, Return: true}
}
