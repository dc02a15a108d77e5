// Starts the suite's own origin server on 127.0.0.1 only (it listens on every address by itself).
//   node origin.mjs SERVER_MJS PORT PIDFILE
import http from 'http'
import { pathToFileURL } from 'url'

const [serverFile, port, pidfile] = process.argv.slice(2)
if (!serverFile || !port || !pidfile) {
  console.error('usage: origin.mjs SERVER_MJS PORT PIDFILE')
  process.exit(2)
}
// The server reads its settings from npm's environment, as `npm run server` would set them.
process.env.npm_config_protocol = 'http'
process.env.npm_config_port = port
process.env.npm_config_pidfile = pidfile

// Bind the port the server asks for to loopback: tests never listen on other interfaces.
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (p, ...rest) {
  if (typeof p === 'number' || typeof p === 'string') {
    return listen.call(this, Number(p), '127.0.0.1', ...rest.filter(a => typeof a === 'function'))
  }
  return listen.call(this, p, ...rest)
}
await import(pathToFileURL(serverFile).href)
