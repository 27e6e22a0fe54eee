// gosplice: a minimal SOCKS5 CONNECT relay in Go, the way go-dispatch-proxy
// relays: a goroutine per direction running io.Copy between two
// *net.TCPConn, which Go turns into splice(2) through a pipe on Linux. It is
// the "splice peer" of benches/compare.sh (GOSPLICE=1): a reference for what
// that technique costs on the machine, written for the benchmark (not
// go-dispatch-proxy itself, whose source is not fetched here). No
// authentication, CONNECT only, IPv4, IPv6 and names; no UDP.
//
//	go build -o gosplice . && ./gosplice 127.0.0.1:18184
package main

import (
	"encoding/binary"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: gosplice LISTEN_ADDR")
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	pause := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			// Out of descriptors, say: wait (as net/http does) rather
			// than spin on a shared machine; the load generator sees the
			// stall.
			time.Sleep(pause)
			if pause < time.Second {
				pause *= 2
			}
			continue
		}
		pause = 5 * time.Millisecond
		go serve(c.(*net.TCPConn))
	}
}

// reply writes a SOCKS5 reply with code rep and an all-zero IPv4 bound address.
func reply(c *net.TCPConn, rep byte) {
	c.Write([]byte{5, rep, 0, 1, 0, 0, 0, 0, 0, 0})
}

func serve(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 262)
	// Greeting: VER NMETHODS METHODS...; "no authentication" is chosen.
	if _, err := io.ReadFull(c, buf[:2]); err != nil || buf[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, buf[:buf[1]]); err != nil {
		return
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return
	}
	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
	if _, err := io.ReadFull(c, buf[:4]); err != nil || buf[0] != 5 {
		return
	}
	if buf[1] != 1 {
		reply(c, 7)
		return
	}
	var host string
	switch buf[3] {
	case 1:
		if _, err := io.ReadFull(c, buf[:4]); err != nil {
			return
		}
		host = net.IP(buf[:4]).String()
	case 4:
		if _, err := io.ReadFull(c, buf[:16]); err != nil {
			return
		}
		host = net.IP(buf[:16]).String()
	case 3:
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			return
		}
		n := int(buf[0])
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		host = string(buf[:n])
	default:
		reply(c, 8)
		return
	}
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return
	}
	port := binary.BigEndian.Uint16(buf[:2])
	t, err := net.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		reply(c, 5)
		return
	}
	target := t.(*net.TCPConn)
	defer target.Close()
	// Success, with the bound address as the target connection's local one.
	local := target.LocalAddr().(*net.TCPAddr)
	out := []byte{5, 0, 0, 1}
	if ip4 := local.IP.To4(); ip4 != nil {
		out = append(out, ip4...)
	} else {
		out[3] = 4
		out = append(out, local.IP.To16()...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(local.Port))
	if _, err := c.Write(out); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(target, c) // splice on Linux: *TCPConn.ReadFrom(*TCPConn)
		target.CloseWrite()
		close(done)
	}()
	io.Copy(c, target)
	c.CloseWrite()
	<-done
}
