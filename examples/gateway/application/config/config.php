<?php
/*
 | Base URLs of the upstream services ("OCP defaults").
 | SDP points the entries of a sandbox's routed services at the sandbox;
 | every other entry keeps the value committed here.
 */
$config['eredar_url'] = 'http://ocp.example.internal/eredar/';
$config['ledger_url'] = 'http://ocp.example.internal/ledger/';
$config['billing_url'] = 'http://ocp.example.internal/billing/';

// Not a URL map entry: the gateway's own settings.
$config['upstream_timeout'] = 10;
