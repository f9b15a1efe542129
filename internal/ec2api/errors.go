package ec2api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// EC2 error codes the API returns, as EC2 spells them (EC2 API reference, "Error codes
// for the Amazon EC2 API"). Codes the validator reports come from package rules.
const (
	codeAuthFailure           = "AuthFailure"
	codeDryRun                = "DryRunOperation"
	codeInvalidAction         = "InvalidAction"
	codeUnsupported           = "UnsupportedOperation"
	codeMissingParameter      = rules.CodeMissingParameter
	codeInvalidParameterValue = rules.CodeParameterValue
	codeUnknownParameter      = rules.CodeUnknownParameter
	codeInvalidCombination    = "InvalidParameterCombination"
	codeGroupNotFound         = rules.CodeGroupNotFound
	codeGroupIDMalformed      = rules.CodeGroupIDMalformed
	codeGroupDuplicate        = rules.CodeGroupDuplicate
	codePermissionDuplicate   = rules.CodePermissionDuplicate
	codePermissionNotFound    = "InvalidPermission.NotFound"
	codePermissionMalformed   = rules.CodePermissionMalformed
	codeRuleIDNotFound        = "InvalidSecurityGroupRuleId.NotFound"
	codeRuleIDMalformed       = rules.CodeRuleIDMalformed
	codePrefixListNotFound    = rules.CodePrefixListNotFound
	codePrefixListMalformed   = rules.CodePrefixListMalformed
	codeInterfaceNotFound     = "InvalidNetworkInterfaceID.NotFound"
	codeDependencyViolation   = "DependencyViolation"
	codePrefixListVersion     = "PrefixListVersionMismatch"
	// Prefix-list codes as EC2 returns them to its clients (the AWS Terraform provider
	// matches InvalidPrefixListModification "… does not exist." for an entry removed that
	// is not there; sgd gives the same code to an entry added that is already there, which
	// AWS refuses rather than overwriting); more entries than MaxEntries is
	// PrefixListMaxEntriesExceeded; a ClientToken reused with other parameters is
	// IdempotentParameterMismatch (EC2's "Ensuring idempotency" page).
	codePrefixListModification = "InvalidPrefixListModification"
	codePrefixListMaxEntries   = "PrefixListMaxEntriesExceeded"
	codeIdempotentMismatch     = "IdempotentParameterMismatch"
	codeTagLimitExceeded       = "TagLimitExceeded"
	codeInvalidID              = "InvalidID"
	codeInvalidNextToken       = "InvalidNextToken"
	// codeReadOnly: a group (or rule, prefix list, interface) of the config file, changed
	// through the API. EC2's OperationNotPermitted is its code for "this object does not
	// allow this operation" given by the object's own state (a protected instance, an
	// AWS-managed object), not a missing permission of the caller (UnauthorizedOperation,
	// which would send a user to IAM policies sgd does not have). The message says where
	// the object is defined and how to change it.
	codeReadOnly       = "OperationNotPermitted"
	codeInternalError  = "InternalError"
	codeRequestLimit   = "RequestLimitExceeded"
	codeMethodNotAllow = "InvalidHttpMethod"
)

// apiError is an error as EC2 returns it: a code, a message, an HTTP status.
type apiError struct {
	Code, Msg string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Msg }

func errf(code, format string, a ...any) *apiError {
	return &apiError{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// status is the HTTP status EC2 answers a code with: 401 for authentication, 412 for a
// dry run that would have succeeded, 500/503 for the server's own trouble, 400 for
// everything the request got wrong.
func status(code string) int {
	switch code {
	case codeAuthFailure:
		return http.StatusUnauthorized
	case codeDryRun:
		return http.StatusPreconditionFailed
	case codeInternalError:
		return http.StatusInternalServerError
	case codeRequestLimit:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// asAPIError turns any error into the one EC2 error a response carries. The validator's
// errors (rules.Errors, from the controller) keep their code; the message says which
// object and field, and how many other problems there were. Anything else is an
// InternalError whose message is the error's text: it names a file or a system call, never
// a key.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var es rules.Errors
	if errors.As(err, &es) && len(es) > 0 {
		e := es[0]
		var b strings.Builder
		if e.File != "" && e.File != "api" && !strings.HasPrefix(e.File, "api: ") {
			// A problem of the config file, not of this request: the file is validated
			// with every change and a change cannot go in while it is invalid.
			fmt.Fprintf(&b, "the config file %s", e.File)
			if e.Line > 0 {
				fmt.Fprintf(&b, ":%d", e.Line)
			}
			b.WriteString(" is invalid: ")
		}
		if e.Where != "" {
			b.WriteString(e.Where)
			if e.Field != "" {
				b.WriteString(" " + e.Field)
			}
			b.WriteString(": ")
		}
		b.WriteString(e.Msg)
		if len(es) > 1 {
			fmt.Fprintf(&b, " (and %d more problems)", len(es)-1)
		}
		return &apiError{Code: e.Code, Msg: b.String()}
	}
	var e *rules.Error
	if errors.As(err, &e) {
		return &apiError{Code: e.Code, Msg: e.Error()}
	}
	return &apiError{Code: codeInternalError, Msg: err.Error()}
}
