<?php
// erangel: a small API gateway. A request for /<service>/<rest> is proxied to
// the base URL in $config['<service>_url'] followed by <rest>.
require __DIR__ . '/application/config/config.php';

function answer_json($status, $data)
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($data, JSON_UNESCAPED_SLASHES), "\n";
    exit;
}

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$parts = explode('/', ltrim($path, '/'), 2);
$service = $parts[0];
$rest = isset($parts[1]) ? $parts[1] : '';

if ($service === '') {
    $routes = array();
    foreach ($config as $key => $value) {
        if (substr($key, -4) === '_url') {
            $routes[substr($key, 0, -4)] = $value;
        }
    }
    answer_json(200, array('gateway' => 'erangel', 'routes' => $routes));
}

$key = $service . '_url';
if (!preg_match('/^[a-z0-9-]+$/', $service) || !isset($config[$key])) {
    answer_json(404, array('error' => "no route for service '$service'"));
}

$upstream = $config[$key];
$url = $upstream . $rest;
if (!empty($_SERVER['QUERY_STRING'])) {
    $url .= '?' . $_SERVER['QUERY_STRING'];
}
$context = stream_context_create(array('http' => array(
    'method' => $_SERVER['REQUEST_METHOD'],
    'header' => 'Content-Type: ' . (isset($_SERVER['CONTENT_TYPE']) ? $_SERVER['CONTENT_TYPE'] : 'text/plain'),
    'content' => file_get_contents('php://input'),
    'ignore_errors' => true,
    'timeout' => 10,
)));
$body = @file_get_contents($url, false, $context);
if ($body === false) {
    answer_json(502, array('error' => 'upstream unreachable', 'upstream' => $upstream));
}
$status = 200;
if (isset($http_response_header[0]) && preg_match('#^HTTP/\S+ (\d{3})#', $http_response_header[0], $m)) {
    $status = (int) $m[1];
}
foreach ($http_response_header as $h) {
    if (stripos($h, 'Content-Type:') === 0) {
        header($h);
    }
}
http_response_code($status);
header('X-Gateway-Upstream: ' . $upstream);
echo $body;
