import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore

#if canImport(Glibc)
import Glibc
#endif

/// The exchange's upstream half: choosing an instance, connecting (or taking a pooled connection), sending the
/// request, and passing the instance's answer back to the caller as it arrives.
extension ProxyHandler {
    func connect() {
        guard let target = exchange?.match?.target, let loop = context?.eventLoop else { return }
        // Usually the instances are in discovery's cache: no future, no hop.
        if let snapshot = router.cachedSnapshot(of: target.service) {
            choose(from: snapshot, service: target.service)
            return
        }
        let proxy = NIOLoopBound(self, eventLoop: loop)
        router.snapshot(of: target.service, on: loop).whenComplete { result in
            let handler = proxy.value
            guard handler.state == .connecting else { return }
            switch result {
            case .success(let snapshot):
                handler.choose(from: snapshot, service: target.service)
            case .failure(is GatewayRouter.NoInstance):
                handler.respondWithError(.serviceUnavailable, service: target.service, reason: "no healthy instance")
            case .failure(let error):
                handler.respondWithError(
                    .serviceUnavailable, service: target.service, reason: "the registry could not be asked: \(error)")
            }
        }
    }

    func choose(from snapshot: DiscoverySnapshot, service: ServiceName) {
        guard let match = exchange?.match else { return }
        finishPick()
        let key = UpstreamSelector.BalancerKey(target: match.target, balancer: match.route?.balancer ?? .roundRobin)
        guard !snapshot.instances.isEmpty,
            let picked = router.selector.pick(
                key, from: snapshot, avoiding: exchange!.tried, context: PickContext(hashKey: exchange!.stickyKey))
        else {
            if let failure = exchange!.lastFailure {
                // A retry found no other instance to try: the caller learns why the last attempt failed.
                respondWithError(.badGateway, service: service, reason: failure)
            } else {
                respondWithError(
                    .serviceUnavailable, service: service, reason: "no healthy instance (or every circuit is open)")
            }
            return
        }
        let instance = picked.instance
        exchange!.balancerKey = key
        exchange!.breakerPermit = picked.permit
        exchange!.attempts += 1
        exchange!.instance = instance
        exchange!.knownInstances = snapshot.instances.count
        if tracer != nil { startAttemptSpan(to: instance) }
        let address = UpstreamAddress(
            host: instance.definition.address.rawValue, port: instance.definition.port,
            tls: UpstreamTLS.wanted(by: instance))
        if let connection = pool.idleConnection(to: address) {
            attach(connection)
            return
        }
        let proxy = NIOLoopBound(self, eventLoop: pool.eventLoop)
        pool.connect(address).whenComplete { result in
            let handler = proxy.value
            guard handler.state == .connecting, handler.exchange?.instance?.id == instance.id else {
                if case .success(let connection) = result { connection.value.channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let connection):
                handler.attach(connection.value)
            case .failure(let error):
                handler.recordOutcome(false, on: instance)
                let reason = "\(instance.id): \(TransportFailure(error))"
                handler.endAttemptSpan(failure: reason)
                handler.retryOrFail(reason: reason)
            }
        }
    }

    /// Another instance when attempts remain and the request can still be sent whole; else the caller gets a 502.
    /// The failed instance is not tried again, unless `avoidingFailed` is false (a stale pooled connection: nothing
    /// against the instance).
    func retryOrFail(reason: String, avoidingFailed: Bool = true) {
        guard let match = exchange?.match else { return }
        if avoidingFailed, let failed = exchange!.instance { exchange!.tried.insert(failed.id) }
        // At most `retries` attempts after the first, a stale pooled connection's not counted. (Counting the
        // instances tried instead let a service with fewer instances than that retry until they were ejected.)
        let counted = exchange!.attempts - (exchange!.retriedStaleConnection ? 1 : 0)
        if exchange!.replayable, counted <= match.route?.retries ?? configuration.connectRetries {
            exchange!.lastFailure = reason
            state = .connecting
            connect()
        } else {
            respondWithError(.badGateway, service: match.target.service, reason: reason)
        }
    }

    func attach(_ connection: UpstreamConnection) {
        guard let context, let request = exchange?.request, let match = exchange?.match,
            let instance = exchange?.instance
        else { return }
        exchange!.upstream = connection
        connection.begin(for: self, toHEAD: request.isHEAD, upgrading: exchange!.webSocket)
        state = .forwarding
        GatewayHeaders.upstreamRequest(
            request, path: match.path, clientAddress: clientAddress, requestID: exchange!.id,
            instanceHost: { "\(instance.definition.address.rawValue):\(instance.definition.port)" },
            extras: UpstreamExtras(
                identity: exchange!.identity, edits: match.route?.policies.requestHeaders ?? HeaderEdits(),
                traceparent: exchange!.trace, webSocket: exchange!.webSocket, callerUsedTLS: callerUsesTLS),
            into: &upstreamHeadBuffer)
        connection.channel.write(upstreamHeadBuffer, promise: nil)
        for part in exchange!.sentBody { connection.channel.write(part, promise: nil) }
        if request.expectsContinue, !exchange!.requestBody.isComplete, !exchange!.continueSent {
            // The gateway took the request on the caller's `Expect: 100-continue` (instances never see it).
            exchange!.continueSent = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
        }
        forwardRequestBody()
        connection.channel.flush()
        processInbound()
    }

    /// Sends on whatever of the request's body has arrived, keeping it for a replay while it fits.
    func forwardRequestBody() {
        guard let upstream = exchange?.upstream, var buffer = inbound else {
            startResponseTimeoutOnceSent()
            return
        }
        var wrote = false
        do {
            // Writes without a flush do not come back into the handler: the exchange stays for the whole loop.
            while let part = try exchange!.requestBody.next(from: &buffer) {
                exchange!.keepForReplay(part, limit: Self.replayLimit)
                upstream.channel.write(part, promise: nil)
                wrote = true
            }
        } catch {
            // A body that breaks its own framing: the instance cannot get a sane request, nor the caller an answer
            // on this connection after it.
            inbound = nil
            abandonUpstream()
            if state == .forwarding {
                respondWithError(.badRequest, service: nil, reason: error.message, closing: true)
            } else {
                state = .closing
                context?.close(promise: nil)
            }
            return
        }
        inbound = buffer.readableBytes > 0 ? buffer : nil
        if wrote { upstream.channel.flush() }
        startResponseTimeoutOnceSent()
    }

    /// The instance's time to answer counts from the end of the request, so a slow upload is not a slow instance.
    func startResponseTimeoutOnceSent() {
        // A flush before this may have ended the exchange (the instance's connection failed).
        guard state == .forwarding, exchange?.requestBody.isComplete == true, exchange?.responseDeadline == nil,
            let loop = context?.eventLoop
        else { return }
        let timeout = (exchange!.match?.route?.timeout ?? configuration.responseTimeout).timeAmount
        let deadline = NIODeadline.now() + timeout
        exchange!.responseDeadline = deadline
        // A route reloaded with a timeout shorter than this connection's timer looks: a timer of its own, so the
        // 504 is not late by a period.
        if timeout.nanoseconds < checkPeriod.nanoseconds * 4 {
            let proxy = NIOLoopBound(self, eventLoop: loop)
            loop.scheduleTask(deadline: deadline) {
                let handler = proxy.value
                if handler.state == .forwarding, handler.exchange?.responseDeadline == deadline {
                    handler.responseTimedOut()
                }
            }
        }
    }

    func responseTimedOut() {
        guard state == .forwarding, let match = exchange?.match else { return }
        let instance = exchange?.instance
        if let instance { recordOutcome(false, on: instance) }
        endAttemptSpan(failure: "no answer in time")
        abandonUpstream()
        respondWithError(
            .gatewayTimeout, service: match.target.service,
            reason:
                "\(instance?.id.rawValue ?? "the instance") did not answer within \(match.route?.timeout ?? configuration.responseTimeout)"
        )
    }

    // MARK: The instance's side

    func upstreamResponded(_ head: ResponseHead, framing: BodyFraming) -> Bool {
        guard context != nil, state == .forwarding, let request = exchange?.request else { return false }
        state = .responding
        if let instance = exchange!.instance {
            recordOutcome(head.status < 500, on: instance)
        }
        // A caller learns where a body without a length ends only from the connection closing; an HTTP/1.0
        // caller cannot read chunks, so it gets the data alone, and the close.
        let dechunking = request.minorVersion == 0 && framing == .chunked
        exchange!.responseStarted(status: head.status, closing: framing == .untilClose || dechunking)
        startCapture(head, framing: framing)
        GatewayHeaders.downstreamResponse(
            head, callerMinorVersion: request.minorVersion, keepAlive: exchange!.keepAlive,
            chunked: framing == .chunked && !dechunking, requestID: exchange!.id,
            extras: exchange!.downstreamExtras, into: &responseHeadBuffer)
        // Held until the body's first part, which usually came in the same read: the two go out as one write.
        responseHeadHeld = true
        unflushed = true
        return dechunking
    }

    /// Writes the response head ``upstreamResponded(_:framing:)`` held back, if it still is.
    func writeHeldResponseHead() {
        guard responseHeadHeld, let context else { return }
        responseHeadHeld = false
        context.write(wrapOutboundOut(responseHeadBuffer), promise: nil)
    }

    func upstreamBody(_ bytes: ByteBuffer) {
        guard let context, state == .responding else { return }
        lastActivity = .now()
        if exchange?.cacheCapture != nil { capture(bytes) }
        if responseHeadHeld, bytes.readableBytes <= Self.coalescedBodyLimit {
            // A small first part joins the head: one write and one pass through the pipeline instead of two.
            responseHeadHeld = false
            var body = bytes
            responseHeadBuffer.writeBuffer(&body)
            context.write(wrapOutboundOut(responseHeadBuffer), promise: nil)
        } else {
            writeHeldResponseHead()
            context.write(wrapOutboundOut(bytes), promise: nil)
        }
        unflushed = true
        if !context.channel.isWritable {
            // Held before the flush: the flush may make the caller writable again, and that releases the hold.
            let upstream = exchange?.upstream
            upstream?.holdReading(true)
            unflushed = false
            context.flush()
        }
    }

    func upstreamReadComplete() {
        guard unflushed, let context else { return }
        writeHeldResponseHead()
        unflushed = false
        context.flush()
    }

    func upstreamEnded(reusable: Bool) {
        guard state == .responding else { return }
        storeCapture()
        endAttemptSpan(failure: nil)
        let connection = exchange?.upstream
        exchange?.upstream = nil
        let requestComplete = exchange?.requestBody.isComplete ?? false
        let keepAlive = exchange?.keepAlive ?? false
        if let connection {
            // Reuse only a connection whose exchange ended cleanly on both sides and which the instance keeps.
            if reusable, requestComplete {
                pool.release(connection)
            } else {
                connection.channel.close(promise: nil)
            }
        }
        // A response that ended before its request did leaves body bytes unread: the connection ends with it.
        finishExchange(closing: !keepAlive || !requestComplete)
    }

    func upstreamFailed(_ error: any Error) {
        let connection = exchange?.upstream
        exchange?.upstream = nil
        connection?.channel.close(promise: nil)
        endAttemptSpan(failure: "\(TransportFailure(error))")
        switch state {
        case .forwarding:
            exchange?.responseDeadline = nil
            let instance = exchange?.instance
            let reason = "\(instance?.id.rawValue ?? "the instance") failed: \(TransportFailure(error))"
            let idempotent = exchange?.request?.isIdempotent ?? false
            let replayable = exchange?.replayable ?? false
            if connection?.isReused == true, exchange?.retriedStaleConnection == false, replayable, idempotent,
                Self.isStaleConnectionFailure(error)
            {
                exchange?.retriedStaleConnection = true
                // A kept-alive connection the instance closed while it waited: nothing against the instance, and
                // the same instance may take the request on a new connection.
                retryOrFail(reason: reason, avoidingFailed: false)
                return
            }
            if let instance { recordOutcome(false, on: instance) }
            // Nothing reached the caller yet: another instance may take the request if it may be sent twice and
            // can still be sent whole.
            if replayable, idempotent {
                retryOrFail(reason: reason)
            } else if let target = exchange?.match?.target {
                respondWithError(.badGateway, service: target.service, reason: reason)
            }
        case .tunnel:
            closeTunnel()
        case .responding:
            // Half a response is out: the caller must see the connection end, not a truncated success.
            writeHeldResponseHead()
            state = .closing
            context?.flush()
            context?.close(promise: nil)
        default:
            break
        }
    }

    /// A failure a kept-alive connection shows when the instance closed it while it waited in the pool.
    static func isStaleConnectionFailure(_ error: any Error) -> Bool {
        if let error = error as? ChannelError, error == .eof || error == .ioOnClosedChannel { return true }
        if let error = error as? IOError, [ECONNRESET, EPIPE].contains(error.errnoCode) { return true }
        return false
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { resumeCallerIfWanted() }
    }
}
