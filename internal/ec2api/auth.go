package ec2api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Credentials are the API's keys: access key id → secret access key. The zero value
// accepts no request.
type Credentials map[string]string

// LoadCredentials reads an AWS shared-credentials file: sections [name] with
// aws_access_key_id and aws_secret_access_key (other keys, comments and blank lines are
// allowed, as the AWS CLI allows them). Errors never quote a secret.
func LoadCredentials(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("API credentials: %w", err)
	}
	return ParseCredentials(path, b)
}

// ParseCredentials parses the text of a shared-credentials file named name.
func ParseCredentials(name string, b []byte) (Credentials, error) {
	creds := Credentials{}
	type section struct {
		name, id, secret string
		line             int
	}
	var cur *section
	done := func() error {
		if cur == nil {
			return nil
		}
		switch {
		case cur.id == "" && cur.secret == "":
			return nil // a profile of other settings
		case cur.id == "" || cur.secret == "":
			return fmt.Errorf("%s:%d: profile [%s] needs both aws_access_key_id and aws_secret_access_key", name, cur.line, cur.name)
		}
		if _, dup := creds[cur.id]; dup {
			return fmt.Errorf("%s:%d: profile [%s]: the access key id of another profile", name, cur.line, cur.name)
		}
		creds[cur.id] = cur.secret
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			if err := done(); err != nil {
				return nil, err
			}
			cur = &section{name: strings.TrimSpace(s[1 : len(s)-1]), line: line}
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok || cur == nil {
			return nil, fmt.Errorf("%s:%d: not a [profile] or a key = value line", name, line)
		}
		switch strings.TrimSpace(k) {
		case "aws_access_key_id":
			cur.id = strings.TrimSpace(v)
		case "aws_secret_access_key":
			cur.secret = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := done(); err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("%s: no profile with aws_access_key_id and aws_secret_access_key", name)
	}
	return creds, nil
}

// maxSkew is how far a request's date may be from the server's clock: AWS refuses a
// Signature Version 4 request more than 5 minutes off ("Signature expired").
const maxSkew = 5 * time.Minute

// authorization is what the Authorization header of a SigV4 request says.
type authorization struct {
	keyID, date, region, service string
	signedHeaders                string // as written: lower case, ;-separated, sorted
	signature                    string
}

func parseAuthorization(h string) (authorization, bool) {
	var a authorization
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, false
	}
	var cred string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			a.signedHeaders = v
		case "Signature":
			a.signature = v
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || a.signedHeaders == "" || a.signature == "" {
		return a, false
	}
	a.keyID, a.date, a.region, a.service = scope[0], scope[1], scope[2], scope[3]
	return a, true
}

// verify checks r's Signature Version 4 against the keys. body is r's body, already read.
// The expected signature is computed by aws-sdk-go-v2's signer over a copy of the request
// that holds exactly what the client signed: the method, path and query, the host, and the
// headers the Authorization header names (content-length only when signed, since the
// signer adds it on its own for a body), with the hash of the body as received. A request
// whose body, headers or date were changed after signing fails the comparison. The error
// says what failed without quoting a key, a secret or a signature.
func verify(ctx context.Context, r *http.Request, body []byte, creds Credentials, now time.Time) error {
	h := r.Header.Get("Authorization")
	if h == "" {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: the request is not signed (no Authorization header)")
	}
	a, ok := parseAuthorization(h)
	if !ok {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: the Authorization header is not AWS Signature Version 4")
	}
	secret, ok := creds[a.keyID]
	if !ok {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: unknown access key")
	}
	signedAt, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: no valid X-Amz-Date header")
	}
	if d := now.Sub(signedAt); d > maxSkew || d < -maxSkew {
		return errf(codeAuthFailure, "Signature expired: %s is now earlier or later than %s (the request's date must be within 5 minutes of the server's)",
			signedAt.Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"))
	}
	if a.service != "ec2" {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: the credential scope is for service %q, not ec2", a.service)
	}

	c, err := http.NewRequestWithContext(ctx, r.Method, "http://placeholder/", nil)
	if err != nil {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials")
	}
	c.URL = &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	c.Host = r.Host
	c.Header = http.Header{}
	sawHost := false
	for _, name := range strings.Split(a.signedHeaders, ";") {
		switch name {
		case "host":
			sawHost = true
		case "content-length":
			c.ContentLength = int64(len(body))
		case "x-amz-date":
			// the signer writes it from the signing time
		default:
			vals := r.Header.Values(name)
			if len(vals) == 0 {
				return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: signed header %s is missing", name)
			}
			c.Header[http.CanonicalHeaderKey(name)] = vals
		}
	}
	if !sawHost {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials: the host header is not signed")
	}
	sum := sha256.Sum256(body)
	signer := v4.NewSigner()
	err = signer.SignHTTP(ctx, aws.Credentials{AccessKeyID: a.keyID, SecretAccessKey: secret}, c,
		hex.EncodeToString(sum[:]), a.service, a.region, signedAt)
	if err != nil {
		return errf(codeAuthFailure, "AWS was not able to validate the provided access credentials")
	}
	want, ok := parseAuthorization(c.Header.Get("Authorization"))
	if !ok || want.signedHeaders != a.signedHeaders || want.date != a.date ||
		!hmac.Equal([]byte(want.signature), []byte(a.signature)) {
		return errf(codeAuthFailure, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}
